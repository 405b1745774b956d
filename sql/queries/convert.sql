-- Turn the stream's new matching events into tasks, in one statement.
-- $1 consumer name, $2 how many events to scan at most.
--
-- Events are read in (txid, id) order and only below the oldest transaction still running
-- (pg_snapshot_xmin): a transaction that commits late cannot have its events skipped,
-- because the cursor never passes a transaction that may still commit. The consumer row
-- is locked with SKIP LOCKED so one worker converts at a time; the others get locked=false.
WITH consumer AS (
    SELECT cursor, cursor_txid,
           ARRAY(SELECT kanthorq_subject_regex(p) FROM unnest(subject_includes) AS p) AS includes,
           ARRAY(SELECT kanthorq_subject_regex(p) FROM unnest(subject_excludes) AS p) AS excludes
    FROM kanthorq_consumer_registry
    WHERE name = $1
    FOR UPDATE SKIP LOCKED
),
horizon AS (
    SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin
),
scanned AS (
    SELECT e.id, e.subject, e.txid
    FROM {{stream}} AS e
    WHERE (e.txid, e.id) > ((SELECT cursor_txid FROM consumer), (SELECT cursor FROM consumer))
      AND e.txid < (SELECT xmin FROM horizon)
    ORDER BY e.txid, e.id
    LIMIT $2
),
inserted AS (
    INSERT INTO {{tasks}} (event_id, subject, state, schedule_at, created_at, updated_at)
    SELECT s.id, s.subject, 1, kanthorq_now_ms(), kanthorq_now_ms(), kanthorq_now_ms()
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
    -- committed events that wait for an older transaction to finish
    EXISTS (
        SELECT 1 FROM {{stream}} AS e WHERE e.txid >= (SELECT xmin FROM horizon)
    ) AS waiting
