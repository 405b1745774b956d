-- A stream's newest events, for the dashboard's events per second: those whose ids are
-- from $1 on (ids sort by time: $1 is the smallest id of a millisecond), counted up to $2
-- from the primary key.
SELECT count(*) AS events FROM (SELECT 1 FROM {{stream}} AS e WHERE e.id >= $1 LIMIT $2) AS x
