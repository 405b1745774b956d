-- Every schedule, for kanthorq show (when the table exists).
SELECT name, stream, subject, spec, last_tick, next_tick, kanthorq_now_ms() AS now
FROM kanthorq_schedule
ORDER BY name
