-- In how many milliseconds the next runnable task is due (<= 0: now), or NULL when none
-- waits. Computed in the database, so the client's clock does not matter.
SELECT min(t.schedule_at) - kanthorq_now_ms() FROM {{tasks}} AS t WHERE t.state IN (1, 102)
