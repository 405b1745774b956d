-- inspect_lag_estimate by id alone (see inspect_lag_by_id.sql). $1 is unused.
EXPLAIN (FORMAT JSON)
SELECT 1 FROM {{stream}} AS e WHERE e.id > $2::TEXT AND $1::TEXT IS NOT NULL
