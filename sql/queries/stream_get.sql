-- $1 stream name. present: its event table exists (a stream whose table was dropped is
-- created again).
SELECT r.id, r.name, r.created_at,
       to_regclass(quote_ident('kanthorq_' || r.id)) IS NOT NULL AS present
FROM kanthorq_stream_registry r
WHERE r.name = $1
