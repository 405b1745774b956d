-- Every consumer (of the stream named $1; NULL: all), by name, with its whole cursor, for
-- kanthorq show. has_table: its task table exists. coherent: the position is (cursor_txid,
-- cursor), else cursor alone (see convert.sql).
SELECT r.stream_id, r.stream_name, r.id, r.name, r.subject_includes, r.subject_excludes,
       r.cursor, r.cursor_txid::TEXT AS cursor_txid, r.txid_cursor = r.cursor AS coherent,
       r.skip_id, r.skip_txid::TEXT AS skip_txid, r.attempt_max, r.visibility_timeout,
       to_regclass(quote_ident('kanthorq_' || r.id)) IS NOT NULL AS has_table
FROM kanthorq_consumer_registry AS r
WHERE $1::TEXT IS NULL OR r.stream_name = $1
ORDER BY r.name
