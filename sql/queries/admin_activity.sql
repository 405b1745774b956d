-- A consumer's activity per minute, for the dashboard's chart: $1 the window's start (ms),
-- $2 the earliest schedule read (ms), $3 at most this many tasks read per state.
--
-- Bounded: for each state, the tasks due from $2 on, the latest first, at most $3 of them,
-- read from the (state, schedule_at, event_id) index; nothing else. A discarded or
-- retryable task's schedule is set when it fails, so a failure in the window is found; a
-- completed task keeps the schedule it was claimed on, so one that waited in a backlog from
-- before $2 is not counted (the caller says so), nor the earlier failures of a task that a
-- resume or a retry made available since. A state that gave $3 rows may have had
-- more: its counts are then lower bounds.
--
-- Rows (kind, minute, n): n of kind in the minute from the window's start (0, 1, ...):
-- completed and discarded by finalized_at; retried: error records ("at") but the last one
-- of a discarded task, which discarded it. And ('read', state, n): the rows read.
WITH recent AS (
    (SELECT t.state, t.finalized_at, t.attempted_error FROM {{tasks}} AS t
     WHERE t.state = 101 AND t.schedule_at >= $2 ORDER BY t.schedule_at DESC LIMIT $3)
    UNION ALL
    (SELECT t.state, t.finalized_at, t.attempted_error FROM {{tasks}} AS t
     WHERE t.state = -102 AND t.schedule_at >= $2 ORDER BY t.schedule_at DESC LIMIT $3)
    UNION ALL
    (SELECT t.state, t.finalized_at, t.attempted_error FROM {{tasks}} AS t
     WHERE t.state = 102 AND t.schedule_at >= $2 ORDER BY t.schedule_at DESC LIMIT $3)
    UNION ALL
    (SELECT t.state, t.finalized_at, t.attempted_error FROM {{tasks}} AS t
     WHERE t.state = 2 AND t.schedule_at >= $2 ORDER BY t.schedule_at DESC LIMIT $3)
),
events AS (
    SELECT 'completed' AS kind, r.finalized_at AS at FROM recent AS r
    WHERE r.state = 101 AND r.finalized_at >= $1
    UNION ALL
    SELECT 'discarded', r.finalized_at FROM recent AS r
    WHERE r.state = -102 AND r.finalized_at >= $1
    UNION ALL
    SELECT 'retried', (e.record ->> 'at')::NUMERIC::BIGINT
    FROM recent AS r
    CROSS JOIN LATERAL unnest(r.attempted_error) WITH ORDINALITY AS e(record, n)
    WHERE cardinality(r.attempted_error) > 0
      AND NOT (r.state = -102 AND e.n = cardinality(r.attempted_error))
      AND jsonb_typeof(e.record -> 'at') = 'number'
      AND (e.record ->> 'at')::NUMERIC >= $1
)
SELECT 'read' AS kind, r.state::BIGINT AS minute, count(*) AS n FROM recent AS r GROUP BY r.state
UNION ALL
SELECT ev.kind, (ev.at - $1) / 60000, count(*) FROM events AS ev GROUP BY ev.kind, 2
