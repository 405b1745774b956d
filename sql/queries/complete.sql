-- Complete running tasks in a batch: $1 event ids, $2 the attempt each claim counted.
-- Returns the (event id, attempt) pairs that changed: a stale attempt (rescued and claimed
-- again) changes nothing, and must not be mistaken for the current attempt of its task.
UPDATE {{tasks}} AS t
SET state = 101, finalized_at = kanthorq_now_ms(), deadline_at = 0, updated_at = kanthorq_now_ms()
FROM unnest($1::TEXT[], $2::INT[]) AS a(event_id, attempt)
WHERE t.event_id = a.event_id AND t.state = 2 AND t.attempt_count = a.attempt
RETURNING t.event_id, t.attempt_count
