-- Turn the stream's new matching events into tasks, in one statement.
-- $1 consumer name, $2 how many events to scan at most.
--
-- Events are read in (txid, id) order, and only those of transactions older than the
-- horizon: the oldest transaction of this database still running when the statement's
-- snapshot was taken (or the snapshot's xmax when none is). A transaction that commits
-- late therefore cannot have its events skipped: the cursor never passes a transaction
-- that may still commit. Running transactions of other databases cannot write to this
-- stream and do not hold it back; a running transaction whose database is unknown does.
-- The consumer row is locked with SKIP LOCKED so one worker converts at a time; the others
-- get locked = false.
WITH consumer AS (
    SELECT cursor, cursor_txid,
           ARRAY(SELECT kanthorq_subject_regex(p) FROM unnest(subject_includes) AS p) AS includes,
           ARRAY(SELECT kanthorq_subject_regex(p) FROM unnest(subject_excludes) AS p) AS excludes
    FROM kanthorq_consumer_registry
    WHERE name = $1
    FOR UPDATE SKIP LOCKED
),
horizon AS (
    SELECT coalesce(
        (
            SELECT min(x)
            FROM pg_snapshot_xip(pg_current_snapshot()) AS x
            WHERE NOT EXISTS (
                SELECT 1
                FROM pg_stat_get_activity(NULL) AS a
                WHERE a.backend_xid = xid(x)
                  AND a.datid <> (SELECT oid FROM pg_database WHERE datname = current_database())
            )
        ),
        pg_snapshot_xmax(pg_current_snapshot())
    ) AS upto
),
scanned AS (
    SELECT e.id, e.subject, e.txid, e.metadata -> 'kanthorq.schedule_at' AS schedule
    FROM {{stream}} AS e
    WHERE (e.txid, e.id) > ((SELECT cursor_txid FROM consumer), (SELECT cursor FROM consumer))
      AND e.txid < (SELECT upto FROM horizon)
    ORDER BY e.txid, e.id
    LIMIT $2
),
inserted AS (
    INSERT INTO {{tasks}} (event_id, subject, state, schedule_at, created_at, updated_at)
    SELECT s.id, s.subject, 1,
           -- a scheduled event (see kanthorq/schedule.py): its time, else now; a value
           -- that is not a number of milliseconds (another client's) is ignored
           CASE WHEN jsonb_typeof(s.schedule) = 'number'
                THEN greatest(least(s.schedule::NUMERIC, 1e15), 0)::BIGINT
                ELSE kanthorq_now_ms()
           END,
           kanthorq_now_ms(), kanthorq_now_ms()
    FROM scanned AS s
    WHERE s.subject ~ ANY ((SELECT includes FROM consumer)::TEXT[])
      AND NOT s.subject ~ ANY ((SELECT excludes FROM consumer)::TEXT[])
    ON CONFLICT (event_id) DO NOTHING
    RETURNING 1
),
last AS (
    SELECT s.id, s.txid FROM scanned AS s ORDER BY s.txid DESC, s.id DESC LIMIT 1
),
moved AS (
    UPDATE kanthorq_consumer_registry AS r
    SET cursor = last.id, cursor_txid = last.txid, updated_at = kanthorq_now_ms()
    FROM last
    WHERE r.name = $1
    RETURNING 1
)
SELECT
    (SELECT count(*) FROM scanned) AS scanned,
    (SELECT count(*) FROM inserted) AS inserted,
    EXISTS (SELECT 1 FROM consumer) AS locked,
    -- not locked: another worker converts, unless the consumer is gone
    EXISTS (SELECT 1 FROM consumer)
        OR EXISTS (SELECT 1 FROM kanthorq_consumer_registry WHERE name = $1) AS registered,
    -- committed events that wait for an older transaction to finish
    EXISTS (
        SELECT 1 FROM {{stream}} AS e WHERE e.txid >= (SELECT upto FROM horizon)
    ) AS waiting
