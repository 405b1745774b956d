-- Move a consumer's cursor back to ($2 txid, $3 id), only if that is before where it is:
-- a replay never skips events. $1 consumer name, $4 the first event id replayed (for a
-- consumer whose position is its cursor alone: another client, KanthorQ for Go, converts it
-- by id; see convert.sql). Returns the old position, or no row. The new position belongs to
-- this package's conversion (txid_cursor), and what a takeover passed over is replayed too.
-- The row lock waits for a conversion in progress, which moves the cursor too.
WITH current AS (
    SELECT name, cursor_txid, cursor, txid_cursor = cursor AS coherent
    FROM kanthorq_consumer_registry
    WHERE name = $1
    FOR UPDATE
)
UPDATE kanthorq_consumer_registry AS r
SET cursor_txid = $2::TEXT::XID8, cursor = $3, txid_cursor = $3, skip_id = '', skip_txid = '0',
    updated_at = kanthorq_now_ms()
FROM current
WHERE r.name = current.name
  AND CASE WHEN current.coherent
           THEN ($2::TEXT::XID8, $3::TEXT) < (current.cursor_txid, current.cursor::TEXT)
           ELSE $4::TEXT <= current.cursor::TEXT
      END
RETURNING current.cursor_txid::TEXT AS old_txid, current.cursor AS old_cursor
