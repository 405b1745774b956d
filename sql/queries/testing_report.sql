-- For kanthorq.testing.drain: the consumer's tasks that changed since $1 (ms, by the
-- database's clock), each with the error records written since then.
SELECT t.event_id,
       t.state,
       t.attempt_count,
       ARRAY(
           SELECT e::TEXT FROM unnest(t.attempted_error) AS e
           WHERE jsonb_typeof(e -> 'at') = 'number' AND (e ->> 'at')::NUMERIC >= $1
       ) AS errors
FROM {{tasks}} AS t
WHERE t.updated_at >= $1
ORDER BY t.event_id
