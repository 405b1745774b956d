-- The event table of a new stream: KanthorQ for Go's columns, and txid, which stamps each
-- event with its inserting transaction, so conversion can wait for slower transactions
-- instead of skipping their events; a client that writes only Go's columns gets it from the
-- default; dedup_key, a publisher's deduplication key (kanthorq/dedup.py), NULL for events
-- published without one (a client that writes only Go's columns). (A stream table that
-- another client created gets both and their indexes online: kanthorq/tables.py.) Its
-- indexes: stream_index_*.sql.
CREATE TABLE IF NOT EXISTS {{stream}} (
    id         VARCHAR(64)  NOT NULL PRIMARY KEY,
    subject    VARCHAR(256) NOT NULL,
    body       BYTEA        NOT NULL,
    metadata   JSONB        NOT NULL DEFAULT '{}',
    created_at BIGINT       NOT NULL DEFAULT kanthorq_now_ms(),
    txid       XID8         NOT NULL DEFAULT pg_current_xact_id(),
    dedup_key  VARCHAR(256)
);
