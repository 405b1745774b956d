-- Running tasks past their deadline belong to a worker that died or stalled: make them
-- retryable now, or discard them when the attempts ($1) are used up. $2 consumer name.
-- The deadline is the one the claim (or an extend) stored, and never earlier than the
-- claim time plus the consumer's registered visibility timeout: that covers attempts that
-- a client which stores no deadline (KanthorQ for Go) claimed.
-- The attempts used are those since the last resume (kanthorq.entities.ATTEMPT_BASE_KEY).
-- A task whose row is locked is skipped: a handler's own transaction holds it (acking it,
-- say), and the worker's loop must never wait for a handler's transaction.
WITH consumer AS (
    SELECT r.visibility_timeout FROM kanthorq_consumer_registry AS r WHERE r.name = $2
),
late AS (
    SELECT t.event_id,
           t.attempt_count - CASE
               WHEN jsonb_typeof(t.metadata -> 'kanthorq.attempt_base') = 'number'
               THEN least(greatest((t.metadata -> 'kanthorq.attempt_base')::NUMERIC, 0), 32767)::INT
               ELSE 0
           END >= $1 AS used_up
    FROM {{tasks}} AS t
    WHERE t.state = 2
      AND greatest(
              t.deadline_at, t.attempted_at + (SELECT visibility_timeout FROM consumer)
          ) < kanthorq_now_ms()
    FOR UPDATE SKIP LOCKED
)
UPDATE {{tasks}} AS t
SET state = CASE WHEN late.used_up THEN -102 ELSE 102 END,
    schedule_at = kanthorq_now_ms(),
    finalized_at = CASE WHEN late.used_up THEN kanthorq_now_ms() ELSE 0 END,
    deadline_at = 0,
    attempted_error = array_append(t.attempted_error, jsonb_build_object(
        'at', kanthorq_now_ms(),
        'attempt', t.attempt_count,
        'error', 'visibility timeout: the worker did not finish the task in time'
    )),
    updated_at = kanthorq_now_ms()
FROM late
WHERE t.event_id = late.event_id AND t.state = 2
RETURNING t.event_id, t.state
