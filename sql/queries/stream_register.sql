-- $1 id, $2 name. Returns the id the stream has now, new or not.
INSERT INTO kanthorq_stream_registry (id, name, created_at, updated_at)
VALUES ($1, $2, kanthorq_now_ms(), kanthorq_now_ms())
ON CONFLICT (name) DO UPDATE SET updated_at = kanthorq_stream_registry.updated_at
RETURNING id, created_at
