-- Extend the lease $1 of holder $2 by $3 ms from now; a row when it is still the holder's.
UPDATE kanthorq_lease SET expires_at = kanthorq_now_ms() + $3
WHERE name = $1 AND holder = $2
RETURNING TRUE
