-- Move back the cursor of a consumer that another client converts by its cursor alone
-- (txid_cursor <> cursor: KanthorQ for Go), to $2, only if that is before where it is. $1
-- consumer name. Only cursor moves, as that client's own conversion moves it. Returns the old
-- cursor, or no row.
WITH current AS (
    SELECT name, cursor
    FROM kanthorq_consumer_registry
    WHERE name = $1 AND txid_cursor <> cursor
    FOR UPDATE
)
UPDATE kanthorq_consumer_registry AS r
SET cursor = $2, updated_at = kanthorq_now_ms()
FROM current
WHERE r.name = current.name AND $2::TEXT < current.cursor::TEXT
RETURNING current.cursor AS old_cursor
