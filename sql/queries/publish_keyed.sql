-- One event with a deduplication key: $1 id, $2 subject, $3 body, $4 metadata, $5 created_at,
-- $6 key. Returns its id when written; no row when an event with that key is in the stream
-- (then nothing is written). A concurrent publish of the same key that has not committed yet
-- is waited for: its commit makes this one a duplicate, its rollback lets this one in.
INSERT INTO {{stream}} (id, subject, body, metadata, created_at, dedup_key)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING
RETURNING id
