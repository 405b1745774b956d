-- Turn the stream's new matching events into tasks, in one statement, and claim at once up
-- to $3 of those that can run now (the converting worker's free handler slots).
-- $1 consumer name, $2 how many events to scan at most, $3 how many tasks to claim at most,
-- $4 the claiming worker's visibility timeout (ms): a claimed task's deadline is now + $4.
--
-- Events are read in (txid, id) order, and only those of transactions below the horizon
-- (kanthorq_horizon(): every transaction below it has finished). A transaction that commits
-- late therefore cannot have its events skipped: the cursor never passes a transaction
-- that may still commit. The consumer row is locked with SKIP LOCKED so one worker converts
-- at a time; the others get locked = false.
--
-- The position is (cursor_txid, cursor) while txid_cursor = cursor. When they differ,
-- another client (KanthorQ for Go, which moves only cursor) has converted since: nothing is
-- scanned, and takeover = true asks the caller to run takeover.sql first. Events that such a
-- client converted before a takeover (skip_id, skip_txid) are not converted again.
--
-- The result is one row per claimed task (with its event, as claim.sql returns it), or a
-- single row with a NULL event_id when none was claimed; the counts repeat on every row.
--
-- The commit does not wait for the WAL flush (lazy, below; a wake-up's latency is mostly
-- that flush). Nothing can be lost by it: the events are durable already, and a crash that
-- forgets this commit forgets the tasks and the cursor's move together, so the same events
-- are converted again. Any later commit that waits for the flush (a completion, an ack in
-- the handler's transaction, a publish) makes this one durable first, as the WAL is one
-- sequence. What a PostgreSQL crash can cost is at-least-once's price: a task claimed here
-- in the last moments before it may be claimed and run again.
WITH lazy AS (SELECT set_config('synchronous_commit', 'off', true) AS set),
consumer AS (
    SELECT cursor, cursor_txid, txid_cursor = cursor AS coherent, skip_id, skip_txid,
           ARRAY(SELECT kanthorq_subject_regex(p) FROM unnest(subject_includes) AS p) AS includes,
           ARRAY(SELECT kanthorq_subject_regex(p) FROM unnest(subject_excludes) AS p) AS excludes
    FROM kanthorq_consumer_registry
    WHERE name = $1
    FOR UPDATE SKIP LOCKED
),
horizon AS (SELECT kanthorq_horizon() AS upto),
now AS (SELECT kanthorq_now_ms() AS ms),
scanned AS (
    SELECT e.id, e.subject, e.txid, e.metadata -> 'kanthorq.schedule_at' AS schedule
    FROM {{stream}} AS e
    WHERE (SELECT coherent FROM consumer)
      AND (e.txid, e.id) > ((SELECT cursor_txid FROM consumer), (SELECT cursor FROM consumer))
      AND e.txid < (SELECT upto FROM horizon)
      AND NOT (e.id <= (SELECT skip_id FROM consumer) AND e.txid < (SELECT skip_txid FROM consumer))
    ORDER BY e.txid, e.id
    LIMIT $2
),
matched AS (
    SELECT s.id, s.subject, s.txid, run.at,
           row_number() OVER (PARTITION BY run.at <= now.ms ORDER BY s.txid, s.id) AS n,
           run.at <= now.ms AS due
    FROM scanned AS s
    CROSS JOIN now
    -- a scheduled event (see kanthorq/schedule.py): its time, else now; a value that is
    -- not a number of milliseconds (another client's) is ignored
    CROSS JOIN LATERAL (
        SELECT CASE WHEN jsonb_typeof(s.schedule) = 'number'
                    THEN greatest(least(s.schedule::NUMERIC, 1e15), 0)::BIGINT
                    ELSE now.ms
               END AS at
    ) AS run
    WHERE s.subject ~ ANY ((SELECT includes FROM consumer)::TEXT[])
      AND NOT s.subject ~ ANY ((SELECT excludes FROM consumer)::TEXT[])
      -- a task that exists already (a replay) is left out here, where reading it waits for
      -- nobody: the INSERT's conflict check would wait for a handler's transaction that
      -- holds its row (ON CONFLICT still covers a task another client adds meanwhile)
      AND NOT EXISTS (SELECT 1 FROM {{tasks}} AS t WHERE t.event_id = s.id)
),
inserted AS (
    INSERT INTO {{tasks}} (
        event_id, subject, state, schedule_at, attempt_count, attempted_at, deadline_at,
        created_at, updated_at
    )
    SELECT m.id, m.subject,
           CASE WHEN claim.at_once THEN 2 ELSE 1 END,
           m.at,
           CASE WHEN claim.at_once THEN 1 ELSE 0 END,
           CASE WHEN claim.at_once THEN now.ms ELSE 0 END,
           CASE WHEN claim.at_once THEN now.ms + $4::BIGINT ELSE 0 END,
           now.ms, now.ms
    FROM matched AS m
    CROSS JOIN now
    CROSS JOIN LATERAL (SELECT m.due AND m.n <= $3 AS at_once) AS claim
    ORDER BY m.txid, m.id
    ON CONFLICT (event_id) DO NOTHING
    RETURNING *
),
last AS (
    SELECT s.id, s.txid FROM scanned AS s ORDER BY s.txid DESC, s.id DESC LIMIT 1
),
moved AS (
    UPDATE kanthorq_consumer_registry AS r
    SET cursor = last.id, cursor_txid = last.txid, txid_cursor = last.id,
        updated_at = kanthorq_now_ms()
    FROM last
    WHERE r.name = $1
    RETURNING 1
),
counts AS (
    SELECT
        (SELECT count(*) FROM scanned) AS scanned,
        (SELECT count(*) FROM inserted) AS inserted,
        EXISTS (SELECT 1 FROM consumer) AS locked,
        EXISTS (SELECT 1 FROM consumer WHERE NOT coherent) AS takeover,
        -- not locked: another worker converts, unless the consumer is gone
        EXISTS (SELECT 1 FROM consumer)
            OR EXISTS (SELECT 1 FROM kanthorq_consumer_registry WHERE name = $1) AS registered,
        -- committed events that wait for an older transaction to finish (the first one in
        -- txid order, so the planner reads the (txid, id) index: an EXISTS would drop the
        -- order, and a generic plan of it scans the whole stream)
        (
            SELECT e.txid FROM {{stream}} AS e
            WHERE e.txid >= (SELECT upto FROM horizon)
            ORDER BY e.txid
            LIMIT 1
        ) IS NOT NULL AS waiting
),
claimed AS (
    SELECT c.event_id, c.subject, c.state, c.schedule_at, c.finalized_at, c.attempt_count,
           c.attempted_at, c.attempted_error, c.metadata, c.created_at, c.updated_at,
           e.id IS NOT NULL AS found, e.body, e.metadata AS event_metadata,
           e.created_at AS event_created_at
    FROM inserted AS c
    LEFT JOIN {{stream}} AS e ON e.id = c.event_id
    WHERE c.state = 2
)
SELECT counts.scanned, counts.inserted, counts.locked, counts.takeover, counts.registered,
       counts.waiting, claimed.*
FROM counts
CROSS JOIN lazy
LEFT JOIN claimed ON TRUE
ORDER BY claimed.event_id
