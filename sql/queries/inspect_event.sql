-- One event of a stream, for kanthorq's HTTP reads. $1 event id.
SELECT id, subject, body, metadata::TEXT AS metadata, created_at
FROM {{stream}}
WHERE id = $1
