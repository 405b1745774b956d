-- $1 stream id, $2 stream name, $3 new consumer id, $4 name, $5 includes, $6 excludes,
-- $7 first cursor, $8 attempt_max, $9 visibility timeout (ms), $10 max_running, $11 and $12
-- the rate (tasks per ms; 0: no such limit). A consumer that exists keeps its id and cursor,
-- and takes the filters, budget and limits the code gives it now. kind is left
-- to its default (1, primary), as KanthorQ for Go leaves it. A new consumer's cursor_txid
-- (0) belongs to its cursor: txid_cursor says so.
INSERT INTO kanthorq_consumer_registry AS r (
    stream_id, stream_name, id, name, subject_includes, subject_excludes, cursor, txid_cursor,
    attempt_max, visibility_timeout, max_running, rate_count, rate_period_ms, created_at,
    updated_at
)
VALUES (
    $1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $10, $11, $12, kanthorq_now_ms(), kanthorq_now_ms()
)
ON CONFLICT (name) DO UPDATE SET
    subject_includes = EXCLUDED.subject_includes,
    subject_excludes = EXCLUDED.subject_excludes,
    attempt_max = EXCLUDED.attempt_max,
    visibility_timeout = EXCLUDED.visibility_timeout,
    max_running = EXCLUDED.max_running,
    rate_count = EXCLUDED.rate_count,
    rate_period_ms = EXCLUDED.rate_period_ms,
    updated_at = kanthorq_now_ms()
WHERE r.stream_id = EXCLUDED.stream_id
RETURNING id, stream_id
