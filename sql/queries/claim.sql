-- Claim up to $1 runnable tasks, oldest schedule first, and return them with their events.
-- The claim counts an attempt: acks, nacks and cancels are fenced on that count. Its
-- deadline is now + $2 (the claiming worker's visibility timeout, ms): rescues read it, so
-- workers with other settings leave the attempt alone until then.
WITH ready AS (
    SELECT t.event_id
    FROM {{tasks}} AS t
    WHERE t.state IN (1, 102) AND t.schedule_at <= kanthorq_now_ms()
    ORDER BY t.schedule_at, t.event_id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
),
claimed AS (
    UPDATE {{tasks}} AS t
    SET state = 2,
        attempt_count = t.attempt_count + 1,
        attempted_at = kanthorq_now_ms(),
        deadline_at = kanthorq_now_ms() + $2::BIGINT,
        updated_at = kanthorq_now_ms()
    FROM ready
    WHERE t.event_id = ready.event_id
    RETURNING t.*
)
SELECT c.event_id, c.subject, c.state, c.schedule_at, c.finalized_at, c.attempt_count,
       c.attempted_at, c.attempted_error, c.metadata, c.created_at, c.updated_at,
       e.id IS NOT NULL AS found, e.body, e.metadata AS event_metadata,
       e.created_at AS event_created_at
FROM claimed AS c
LEFT JOIN {{stream}} AS e ON e.id = c.event_id
ORDER BY c.schedule_at, c.event_id
