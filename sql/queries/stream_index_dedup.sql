-- A deduplication key is unique within its stream while its event is there (kanthorq/dedup.py).
CREATE UNIQUE INDEX IF NOT EXISTS {{stream_dedup_idx}} ON {{stream}} (dedup_key)
    WHERE dedup_key IS NOT NULL
