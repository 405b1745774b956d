-- Push a running task's visibility deadline out (a heartbeat), fenced by its attempt.
-- $1 event id, $2 attempt, $3 the visibility timeout (ms), $4 how long from now (ms).
-- A task is rescued once attempted_at is older than the timeout, so the deadline moves by
-- moving attempted_at forward; it never moves back, and any worker (of any language) that
-- rescues with the same timeout sees the new deadline.
UPDATE {{tasks}} AS t
SET attempted_at = greatest(t.attempted_at, kanthorq_now_ms() + $4::BIGINT - $3::BIGINT),
    updated_at = kanthorq_now_ms()
WHERE t.event_id = $1 AND t.state = 2 AND t.attempt_count = $2
RETURNING t.attempted_at + $3::BIGINT AS deadline
