-- Tasks running longer than the visibility timeout ($2 ms) belong to a worker that died or
-- stalled: make them retryable now, or discard them when the attempts ($1) are used up.
UPDATE {{tasks}} AS t
SET state = CASE WHEN t.attempt_count >= $1 THEN -102 ELSE 102 END,
    schedule_at = kanthorq_now_ms(),
    finalized_at = CASE WHEN t.attempt_count >= $1 THEN kanthorq_now_ms() ELSE 0 END,
    attempted_error = array_append(t.attempted_error, jsonb_build_object(
        'at', kanthorq_now_ms(),
        'attempt', t.attempt_count,
        'error', 'visibility timeout: the worker did not finish the task in time'
    )),
    updated_at = kanthorq_now_ms()
WHERE t.state = 2 AND t.attempted_at < kanthorq_now_ms() - $2
RETURNING t.event_id, t.state
