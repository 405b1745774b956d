-- The planner's estimate of a consumer's tasks in state $1, for a state too large to count.
EXPLAIN (FORMAT JSON) SELECT 1 FROM {{tasks}} AS t WHERE t.state = $1::SMALLINT
