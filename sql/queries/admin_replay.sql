-- Move a consumer's cursor back to ($2 txid, $3 id), only if that is before where it is:
-- a replay never skips events. $1 consumer name. Returns the old position, or no row. What a takeover passed over is replayed too. A consumer that another
-- client converts by its cursor alone is replayed by admin_replay_cursor.sql instead.
-- The row lock waits for a conversion in progress, which moves the cursor too.
WITH current AS (
    SELECT name, cursor_txid, cursor
    FROM kanthorq_consumer_registry
    WHERE name = $1 AND txid_cursor = cursor
    FOR UPDATE
)
UPDATE kanthorq_consumer_registry AS r
SET cursor_txid = $2::TEXT::XID8, cursor = $3, txid_cursor = $3, skip_id = '', skip_txid = '0',
    updated_at = kanthorq_now_ms()
FROM current
WHERE r.name = current.name
  AND ($2::TEXT::XID8, $3::TEXT) < (current.cursor_txid, current.cursor::TEXT)
RETURNING current.cursor_txid::TEXT AS old_txid, current.cursor AS old_cursor
