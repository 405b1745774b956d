-- $1 stream name. has_txid tells whether the table is ready for conversion (a stream that
-- another client created may lack the column).
SELECT r.id, r.name, r.created_at,
       EXISTS (
           SELECT 1 FROM pg_attribute a
           WHERE a.attrelid = to_regclass(quote_ident('kanthorq_' || r.id))
             AND a.attname = 'txid' AND NOT a.attisdropped
       ) AS ready
FROM kanthorq_stream_registry r
WHERE r.name = $1
