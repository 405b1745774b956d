-- Claim up to $1 runnable tasks, oldest schedule first, and return them with their events.
-- The claim counts an attempt: acks, nacks and cancels are fenced on that count. Its
-- deadline is now + $2 (the claiming worker's visibility timeout, ms): rescues read it, so
-- workers with other settings leave the attempt alone until then.
-- A consumer with limits across workers ($3 max_running, $4 tasks per $5 ms; 0: none) takes
-- only its budget of them (kanthorq_claim_budget, in turn with the other claims of consumer
-- $6, on the task table $7); without limits the budget is not read at all. The budget cuts
-- the locked candidates down (so the plan of the scan stays that of LIMIT $1).
WITH ready AS (
    SELECT t.event_id, t.schedule_at
    FROM {{tasks}} AS t
    WHERE t.state IN (1, 102) AND t.schedule_at <= kanthorq_now_ms()
    ORDER BY t.schedule_at, t.event_id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
),
budget AS MATERIALIZED (
    SELECT CASE
        WHEN $3::INT > 0 OR $4::INT > 0
        THEN kanthorq_claim_budget($6::TEXT, $7::TEXT::REGCLASS, $1::INT, $3, $4, $5::BIGINT)
        ELSE $1::INT
    END AS n
),
allowed AS (
    SELECT r.event_id FROM ready AS r
    ORDER BY r.schedule_at, r.event_id
    LIMIT (SELECT n FROM budget)
),
claimed AS (
    UPDATE {{tasks}} AS t
    SET state = 2,
        attempt_count = t.attempt_count + 1,
        attempted_at = kanthorq_now_ms(),
        deadline_at = kanthorq_now_ms() + $2::BIGINT,
        updated_at = kanthorq_now_ms()
    FROM allowed
    WHERE t.event_id = allowed.event_id
    RETURNING t.*
)
SELECT c.event_id, c.subject, c.state, c.schedule_at, c.finalized_at, c.attempt_count,
       c.attempted_at, c.attempted_error, c.metadata, c.created_at, c.updated_at,
       e.id IS NOT NULL AS found, e.body, e.metadata AS event_metadata,
       e.created_at AS event_created_at
FROM claimed AS c
LEFT JOIN {{stream}} AS e ON e.id = c.event_id
ORDER BY c.schedule_at, c.event_id
