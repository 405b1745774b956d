-- Take over a consumer whose cursor another client moved: KanthorQ for Go, which reads the
-- events whose ids sort after its cursor, and moves only cursor. $1 consumer name.
--
-- Every event of a transaction below the horizon (H) whose id sorts at or before that
-- cursor (g) was the other client's to convert; every other event is this package's. The
-- position becomes (T, g), T being the first transaction below H with an event after g (else
-- the last transaction below H, else 0), and (g, H) is kept as skip_id and skip_txid: the
-- events that conversion passes over (convert.sql). Nothing is converted twice, and the
-- history is not converted again, even where its tasks were pruned. cursor keeps its value,
-- so the other client could take the consumer back.
WITH consumer AS (
    SELECT cursor
    FROM kanthorq_consumer_registry
    WHERE name = $1 AND txid_cursor <> cursor
    FOR UPDATE SKIP LOCKED
),
horizon AS (SELECT kanthorq_horizon() AS upto),
start AS (
    SELECT coalesce(
        (
            SELECT min(e.txid) FROM {{stream}} AS e
            WHERE e.id > (SELECT cursor FROM consumer) AND e.txid < (SELECT upto FROM horizon)
        ),
        (
            SELECT e.txid FROM {{stream}} AS e
            WHERE e.txid < (SELECT upto FROM horizon)
            ORDER BY e.txid DESC
            LIMIT 1
        ),
        '0'::XID8
    ) AS txid
)
UPDATE kanthorq_consumer_registry AS r
SET cursor_txid = start.txid,
    txid_cursor = consumer.cursor,
    skip_id = consumer.cursor,
    skip_txid = horizon.upto,
    updated_at = kanthorq_now_ms()
FROM consumer, horizon, start
WHERE r.name = $1
RETURNING r.cursor, r.cursor_txid::TEXT AS cursor_txid, r.skip_txid::TEXT AS skip_txid
