-- Move a consumer's cursor back to ($2 txid, $3 id), only if that is before where it is:
-- a replay never skips events. $1 consumer name. Returns the old position, or no row.
-- The row lock waits for a conversion in progress, which moves the cursor too.
WITH current AS (
    SELECT name, cursor_txid, cursor
    FROM kanthorq_consumer_registry
    WHERE name = $1
    FOR UPDATE
)
UPDATE kanthorq_consumer_registry AS r
SET cursor_txid = $2::TEXT::XID8, cursor = $3, updated_at = kanthorq_now_ms()
FROM current
WHERE r.name = current.name AND ($2::TEXT::XID8, $3::TEXT) < (current.cursor_txid, current.cursor::TEXT)
RETURNING current.cursor_txid::TEXT AS old_txid, current.cursor AS old_cursor
