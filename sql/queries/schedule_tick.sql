-- Claim the publishing of the schedule $1's ticks up to $2 (ms), the next one being $3: only
-- if no process has published them yet. Run in the transaction that writes their events: a
-- second process waits here for the first's commit, then finds the tick taken (no row).
UPDATE kanthorq_schedule
SET last_tick = $2, next_tick = $3, updated_at = kanthorq_now_ms()
WHERE name = $1 AND last_tick < $2
RETURNING last_tick
