-- $1 id, $2 subject, $3 body, $4 metadata, $5 created_at, $6 the stream's channel
-- publish_one.sql, and the stream's workers woken by its own commit: for a publish when
-- none was sent for the stream lately (kanthorq/publisher.py, Notifier.inline)
WITH written AS (
    INSERT INTO {{stream}} (id, subject, body, metadata, created_at)
    VALUES ($1, $2, $3, $4, $5)
    RETURNING id
)
SELECT pg_notify($6, '') FROM written
