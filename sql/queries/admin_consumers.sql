-- Every consumer, by name.
SELECT stream_id, stream_name, id, name, subject_includes, subject_excludes, cursor, cursor_txid,
       txid_cursor = cursor AS coherent, skip_id, skip_txid, attempt_max, visibility_timeout
FROM kanthorq_consumer_registry
ORDER BY name
