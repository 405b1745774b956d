-- Tasks running longer than the visibility timeout ($2 ms) belong to a worker that died or
-- stalled: make them retryable now, or discard them when the attempts ($1) are used up.
-- The attempts used are those since the last resume (kanthorq.entities.ATTEMPT_BASE_KEY).
WITH late AS (
    SELECT t.event_id,
           t.attempt_count - CASE
               WHEN jsonb_typeof(t.metadata -> 'kanthorq.attempt_base') = 'number'
               THEN least(greatest((t.metadata -> 'kanthorq.attempt_base')::NUMERIC, 0), 32767)::INT
               ELSE 0
           END >= $1 AS used_up
    FROM {{tasks}} AS t
    WHERE t.state = 2 AND t.attempted_at < kanthorq_now_ms() - $2
    FOR UPDATE
)
UPDATE {{tasks}} AS t
SET state = CASE WHEN late.used_up THEN -102 ELSE 102 END,
    schedule_at = kanthorq_now_ms(),
    finalized_at = CASE WHEN late.used_up THEN kanthorq_now_ms() ELSE 0 END,
    attempted_error = array_append(t.attempted_error, jsonb_build_object(
        'at', kanthorq_now_ms(),
        'attempt', t.attempt_count,
        'error', 'visibility timeout: the worker did not finish the task in time'
    )),
    updated_at = kanthorq_now_ms()
FROM late
WHERE t.event_id = late.event_id AND t.state = 2 AND t.attempted_at < kanthorq_now_ms() - $2
RETURNING t.event_id, t.state
