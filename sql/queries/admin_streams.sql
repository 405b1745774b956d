-- Every stream, by name.
SELECT id, name, created_at FROM kanthorq_stream_registry ORDER BY name
