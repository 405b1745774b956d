-- The events of the stream that hold the deduplication keys $1: their ids and keys.
SELECT id, dedup_key FROM {{stream}} WHERE dedup_key = ANY ($1::TEXT[])
