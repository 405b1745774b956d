-- One stream's events, for kanthorq show. $1 how many events to count exactly at most,
-- $2 the quoted name of the event table (for the catalog).
--
-- counted: exact when below $1. estimated: the planner's figure, the row density of the last
-- VACUUM or ANALYZE (reltuples / relpages) times the table's pages now, so it follows growth
-- since then; when the table was never analyzed, the statistics' live row count. Newest and
-- oldest: one probe each of the primary key, as ids sort by time.
SELECT
    (SELECT count(*) FROM (SELECT 1 FROM {{stream}} LIMIT $1) AS x) AS counted,
    coalesce(
        (
            SELECT (c.reltuples / c.relpages
                    * (pg_relation_size(c.oid) / current_setting('block_size')::BIGINT))::BIGINT
            FROM pg_class AS c
            WHERE c.oid = to_regclass($2) AND c.relpages > 0 AND c.reltuples >= 0
        ),
        (SELECT s.n_live_tup FROM pg_stat_user_tables AS s WHERE s.relid = to_regclass($2))
    ) AS estimated,
    newest.id AS newest_id, newest.created_at AS newest_at,
    oldest.id AS oldest_id, oldest.created_at AS oldest_at
FROM (SELECT 1) AS one
LEFT JOIN LATERAL (
    SELECT e.id, e.created_at FROM {{stream}} AS e ORDER BY e.id DESC LIMIT 1
) AS newest ON TRUE
LEFT JOIN LATERAL (
    SELECT e.id, e.created_at FROM {{stream}} AS e ORDER BY e.id LIMIT 1
) AS oldest ON TRUE
