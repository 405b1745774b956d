-- The event table of one stream. txid stamps each event with its inserting transaction,
-- so conversion can wait for slower transactions instead of skipping their events; a
-- client that writes only the contract columns gets it from the default.
CREATE TABLE IF NOT EXISTS {{stream}} (
    id         VARCHAR(64)  NOT NULL PRIMARY KEY,
    subject    VARCHAR(256) NOT NULL,
    body       BYTEA,
    metadata   JSONB        NOT NULL DEFAULT '{}',
    created_at BIGINT       NOT NULL DEFAULT kanthorq_now_ms()
);
ALTER TABLE {{stream}} ADD COLUMN IF NOT EXISTS txid XID8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX IF NOT EXISTS {{stream_txid_idx}} ON {{stream}} (txid, id);
