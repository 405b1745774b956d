-- Several events in one statement, their columns as arrays in order: the publishes that
-- arrived while another was being written (kanthorq/grouping.py). Only Go's columns, so it
-- works on a stream table another client created.
INSERT INTO {{stream}} (id, subject, body, metadata, created_at)
SELECT u.id, u.subject, u.body, u.metadata::JSONB, u.created_at
FROM unnest($1::TEXT[], $2::TEXT[], $3::BYTEA[], $4::TEXT[], $5::BIGINT[])
    AS u(id, subject, body, metadata, created_at)
