-- Cancel one running task from its handler, fenced by its attempt. $1 event id, $2 attempt.
UPDATE {{tasks}} AS t
SET state = -101, finalized_at = kanthorq_now_ms(), deadline_at = 0, updated_at = kanthorq_now_ms()
WHERE t.event_id = $1 AND t.state = 2 AND t.attempt_count = $2
RETURNING t.event_id
