-- Take the lease $1 for holder $2 for $3 ms: when it is free, expired, or already its own.
-- Returns a row when the holder has it now.
INSERT INTO kanthorq_lease AS l (name, holder, expires_at)
VALUES ($1, $2, kanthorq_now_ms() + $3)
ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
WHERE l.expires_at <= kanthorq_now_ms() OR l.holder = EXCLUDED.holder
RETURNING TRUE
