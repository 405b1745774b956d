-- For kanthorq show. $1 now (ms), $2 the consumer's visibility timeout (ms).
-- oldest_due_at: the earliest schedule of the available and retryable tasks due now (the
-- claims' partial index). past_timeout: running tasks past their deadline, which the next
-- poll rescues (rescue.sql: the stored deadline, never before the claim time plus the
-- visibility timeout; a table that another client created may lack deadline_at, hence
-- to_jsonb). It reads the running tasks' partial index: no more rows than handlers claimed.
SELECT
    (SELECT min(t.schedule_at) FROM {{tasks}} AS t
     WHERE t.state IN (1, 102) AND t.schedule_at <= $1) AS oldest_due_at,
    (SELECT count(*) FROM {{tasks}} AS t
     WHERE t.state = 2
       AND greatest(
               coalesce((to_jsonb(t) ->> 'deadline_at')::BIGINT, 0), t.attempted_at + $2
           ) < $1) AS past_timeout
