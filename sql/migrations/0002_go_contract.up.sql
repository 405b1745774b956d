-- The registry tables as KanthorQ for Go defines them, type for type and default for default
-- (DESIGN.md section 2), and the columns this package adds to them. It converts a database
-- made by earlier kanthorq releases in place, and changes nothing on one that has Go's
-- schema already (fresh, or migrated by Go first). Every statement can run twice.

-- kind: Go scans it into an int16; earlier releases stored the text 'primary' (= 1).
DO $$
BEGIN
    IF (
        SELECT a.atttypid <> 'int2'::regtype
        FROM pg_attribute AS a
        WHERE a.attrelid = 'kanthorq_consumer_registry'::regclass
          AND a.attname = 'kind' AND NOT a.attisdropped
    ) THEN
        ALTER TABLE kanthorq_consumer_registry ALTER COLUMN kind DROP DEFAULT;
        ALTER TABLE kanthorq_consumer_registry ALTER COLUMN kind TYPE SMALLINT USING (
            CASE WHEN kind ~ '^-?[0-9]{1,4}$' THEN kind::SMALLINT ELSE 1 END
        );
    END IF;
END
$$;

-- Go writes registry rows without created_at, updated_at and kind: the defaults fill them.
ALTER TABLE kanthorq_stream_registry
    ALTER COLUMN created_at SET DEFAULT (extract(epoch FROM current_timestamp) * 1000),
    ALTER COLUMN updated_at SET DEFAULT (extract(epoch FROM current_timestamp) * 1000);
ALTER TABLE kanthorq_consumer_registry
    ALTER COLUMN kind SET DEFAULT 1,
    ALTER COLUMN subject_includes DROP DEFAULT,
    ALTER COLUMN cursor DROP DEFAULT,
    ALTER COLUMN attempt_max SET DEFAULT 16,
    ALTER COLUMN created_at SET DEFAULT (extract(epoch FROM current_timestamp) * 1000),
    ALTER COLUMN updated_at SET DEFAULT (extract(epoch FROM current_timestamp) * 1000);

-- Where this package's conversion stands, beside Go's cursor (see sql/queries/convert.sql):
-- txid_cursor is the cursor that cursor_txid was written with. Go moves only cursor, so
-- when the two differ, another client has converted since, and the consumer's position is
-- its cursor alone. skip_id and skip_txid: when a worker of this package took over from such
-- a client, the events it had converted (id <= skip_id, in a transaction < skip_txid).
ALTER TABLE kanthorq_consumer_registry
    ADD COLUMN IF NOT EXISTS txid_cursor VARCHAR(64) NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS skip_id     VARCHAR(64) NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS skip_txid   XID8        NOT NULL DEFAULT '0';

-- Consumers of earlier releases were converted by this package only (Go could not register
-- on their schema): their cursor and cursor_txid belong together. That is the case too for
-- one that never converted, whose cursor is still the first id of its stream's millisecond.
UPDATE kanthorq_consumer_registry
SET txid_cursor = cursor
WHERE txid_cursor = '' AND (cursor_txid <> '0' OR cursor LIKE 'event\_%0000000000000000');

-- Every task table: Go's default for updated_at, and the deadline of a running attempt
-- (sql/queries/task_table.sql). A constant default adds the column without a rewrite.
DO $$
DECLARE
    tbl REGCLASS;
BEGIN
    FOR tbl IN
        SELECT to_regclass(quote_ident('kanthorq_' || id)) FROM kanthorq_consumer_registry
    LOOP
        CONTINUE WHEN tbl IS NULL;
        EXECUTE format(
            'ALTER TABLE %s ALTER COLUMN updated_at SET DEFAULT kanthorq_now_ms(), '
            'ADD COLUMN IF NOT EXISTS deadline_at BIGINT NOT NULL DEFAULT 0',
            tbl
        );
    END LOOP;
END
$$;

-- The conversion horizon: the oldest transaction of this database still running in the
-- calling statement's snapshot (or the snapshot's xmax when none is). Every transaction
-- below it has finished, so events stamped with a txid below it can be converted without
-- skipping a slower transaction's events. Running transactions of other databases cannot
-- write to a stream and do not hold it back; a running transaction whose database is
-- unknown does. STABLE: it reads the calling statement's snapshot, the one its scan uses.
CREATE OR REPLACE FUNCTION kanthorq_horizon() RETURNS XID8
LANGUAGE sql STABLE PARALLEL RESTRICTED AS $$
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
    )
$$;

-- Leases (kanthorq/lease.py): one holder at a time for a named job (retention), with an
-- expiry by the database's clock; each statement on it is one autocommit statement, so it
-- works through a transaction pooler.
CREATE TABLE IF NOT EXISTS kanthorq_lease (
    name       VARCHAR(256) NOT NULL PRIMARY KEY,
    holder     VARCHAR(64)  NOT NULL,
    expires_at BIGINT       NOT NULL
);
