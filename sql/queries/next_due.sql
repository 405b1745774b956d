-- When the next runnable task is due (ms), or NULL when none is waiting.
SELECT min(t.schedule_at) FROM {{tasks}} AS t WHERE t.state IN (1, 102)
