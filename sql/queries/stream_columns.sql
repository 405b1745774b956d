-- txid on a stream table that another client created. The constant default of ADD COLUMN
-- fills the rows already there without rewriting the table (PostgreSQL keeps it in the
-- catalog): they were all committed before this ALTER got its lock, so they sort first, as
-- transaction 0. SET DEFAULT then gives the rows written after it their own transaction's id.
-- dedup_key (see stream_table.sql) is NULL for every row: no default, no rewrite either.
ALTER TABLE {{stream}}
    ADD COLUMN IF NOT EXISTS txid XID8 NOT NULL DEFAULT '0',
    ALTER COLUMN txid SET DEFAULT pg_current_xact_id(),
    ADD COLUMN IF NOT EXISTS dedup_key VARCHAR(256)
