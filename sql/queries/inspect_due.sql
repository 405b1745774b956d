-- For kanthorq show. $1 now (ms), $2 the consumer's visibility timeout (ms).
-- oldest_due_at: the earliest schedule of the available and retryable tasks due now (the
-- claims' partial index). past_timeout: running tasks claimed longer ago than the visibility
-- timeout, which the next poll rescues (the running tasks' partial index: no more rows than
-- handlers claimed).
SELECT
    (SELECT min(t.schedule_at) FROM {{tasks}} AS t
     WHERE t.state IN (1, 102) AND t.schedule_at <= $1) AS oldest_due_at,
    (SELECT count(*) FROM {{tasks}} AS t
     WHERE t.state = 2 AND t.attempted_at < $1 - $2) AS past_timeout
