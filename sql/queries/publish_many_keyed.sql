-- A batch of which some events have deduplication keys, as publish_keyed.sql does one: the
-- columns as arrays, in order ($6: the keys, NULL for none). Returns the ids written; an
-- event whose key is in the stream already, or earlier in the batch, is not written.
INSERT INTO {{stream}} (id, subject, body, metadata, created_at, dedup_key)
SELECT u.id, u.subject, u.body, u.metadata::JSONB, u.created_at, u.dedup_key
FROM unnest($1::TEXT[], $2::TEXT[], $3::BYTEA[], $4::TEXT[], $5::BIGINT[], $6::TEXT[])
    WITH ORDINALITY AS u(id, subject, body, metadata, created_at, dedup_key, n)
ORDER BY u.n
ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING
RETURNING id
