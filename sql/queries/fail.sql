-- Move one running task, fenced by its attempt, to retryable (102, runs again after $4 ms)
-- or discarded (-102), recording the error. $1 event id, $2 attempt, $3 state, $4 delay
-- (ms), $5 error record (stamped here with the database's time, "at").
UPDATE {{tasks}} AS t
SET state = $3::SMALLINT,
    schedule_at = kanthorq_now_ms() + $4,
    finalized_at = CASE WHEN $3::SMALLINT = -102 THEN kanthorq_now_ms() ELSE 0 END,
    attempted_error = array_append(
        t.attempted_error, $5::JSONB || jsonb_build_object('at', kanthorq_now_ms())
    ),
    deadline_at = 0,
    updated_at = kanthorq_now_ms()
WHERE t.event_id = $1 AND t.state = 2 AND t.attempt_count = $2
RETURNING t.event_id
