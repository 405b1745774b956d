-- A consumer's tasks per state, for kanthorq show: the states present, found by skipping
-- through the (state, schedule_at, event_id) index one state at a time, and each state's
-- tasks counted through it up to $1 (exact below $1; above, the caller estimates).
WITH RECURSIVE states AS (
    (SELECT t.state FROM {{tasks}} AS t ORDER BY t.state LIMIT 1)
    UNION ALL
    SELECT (
        SELECT t.state FROM {{tasks}} AS t WHERE t.state > s.state ORDER BY t.state LIMIT 1
    )
    FROM states AS s
    WHERE s.state IS NOT NULL
)
SELECT s.state,
       (SELECT count(*) FROM (SELECT 1 FROM {{tasks}} AS t WHERE t.state = s.state LIMIT $1) AS x)
           AS counted
FROM states AS s
WHERE s.state IS NOT NULL
ORDER BY s.state
