-- Push a running task's deadline out (a heartbeat), fenced by its attempt.
-- $1 event id, $2 attempt, $3 how long from now (ms). The deadline never moves back, and
-- attempted_at keeps meaning the claim time (KanthorQ for Go reads it so). Returns the
-- deadline.
UPDATE {{tasks}} AS t
SET deadline_at = greatest(t.deadline_at, kanthorq_now_ms() + $3::BIGINT),
    updated_at = kanthorq_now_ms()
WHERE t.event_id = $1 AND t.state = 2 AND t.attempt_count = $2
RETURNING t.deadline_at
