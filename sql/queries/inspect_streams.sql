-- Every stream (or the one named $1; NULL: all), by name, for kanthorq show. has_table: its
-- event table exists; has_txid: the table has the txid column that conversion orders by (a
-- stream created by another client may lack it until a worker of this package converts).
SELECT r.id, r.name, r.created_at,
       to_regclass(quote_ident('kanthorq_' || r.id)) IS NOT NULL AS has_table,
       EXISTS (
           SELECT 1 FROM pg_attribute AS a
           WHERE a.attrelid = to_regclass(quote_ident('kanthorq_' || r.id))
             AND a.attname = 'txid' AND NOT a.attisdropped
       ) AS has_txid
FROM kanthorq_stream_registry AS r
WHERE $1::TEXT IS NULL OR r.name = $1
ORDER BY r.name
