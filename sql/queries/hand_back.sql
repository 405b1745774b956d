-- Shutdown: give running tasks back for another worker at once. The interrupted attempt is
-- not counted, and the interruption is recorded. $1 event ids, $2 attempts, $3 error record.
UPDATE {{tasks}} AS t
SET state = 102,
    schedule_at = kanthorq_now_ms(),
    attempt_count = t.attempt_count - 1,
    deadline_at = 0,
    -- the record ($3) is the same for all; each gets its own interrupted attempt number, and
    -- the database's time
    attempted_error = array_append(
        t.attempted_error,
        $3::JSONB || jsonb_build_object('at', kanthorq_now_ms(), 'attempt', a.attempt)
    ),
    updated_at = kanthorq_now_ms()
FROM unnest($1::TEXT[], $2::INT[]) AS a(event_id, attempt)
WHERE t.event_id = a.event_id AND t.state = 2 AND t.attempt_count = a.attempt
RETURNING t.event_id
