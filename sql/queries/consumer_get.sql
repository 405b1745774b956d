-- $1 consumer name
SELECT stream_id, stream_name, id, name FROM kanthorq_consumer_registry WHERE name = $1
