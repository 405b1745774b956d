-- The planner's estimate of the events past a cursor (from the column statistics of txid),
-- for a lag too large to count. $1 cursor txid (text), $2 cursor.
EXPLAIN (FORMAT JSON)
SELECT 1 FROM {{stream}} AS e WHERE (e.txid, e.id) > ($1::TEXT::XID8, $2::TEXT)
