-- $1 stream name. ready tells whether the table is ready for conversion: it exists, has the
-- txid column and the (txid, id) index (a stream that another client created may lack them,
-- and an index may have been dropped). The stream DDL runs only when it is not ready: its
-- ALTER TABLE would lock the table even when there is nothing to add.
SELECT r.id, r.name, r.created_at,
       EXISTS (
           SELECT 1 FROM pg_attribute a
           WHERE a.attrelid = to_regclass(quote_ident('kanthorq_' || r.id))
             AND a.attname = 'txid' AND NOT a.attisdropped
       )
       AND to_regclass(quote_ident('kanthorq_' || r.id || '_txid')) IS NOT NULL AS ready
FROM kanthorq_stream_registry r
WHERE r.name = $1
