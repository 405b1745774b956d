-- The planner's estimate of the events past a cursor (from the column statistics of txid
-- and id), for a lag too large to count. $1 cursor txid (text), $2 cursor. Spelled out as
-- OR, which the planner estimates per column, where it would judge a row comparison by its
-- first column alone (and see nothing past the cursor within the cursor's transaction).
EXPLAIN (FORMAT JSON)
SELECT 1 FROM {{stream}} AS e
WHERE e.txid > $1::TEXT::XID8 OR (e.txid = $1::TEXT::XID8 AND e.id > $2::TEXT)
