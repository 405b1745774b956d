-- The transaction that holds conversion back (kanthorq_horizon()): the oldest one of this
-- database (or of an unknown one) that has a transaction id and is still running. Its query
-- is shown up to 200 characters (PostgreSQL hides other users' queries from a role without
-- pg_read_all_stats).
SELECT a.pid, a.usename, a.application_name, a.state,
       extract(epoch FROM clock_timestamp() - a.xact_start)::FLOAT8 AS age_s,
       left(a.query, 200) AS query
FROM pg_stat_activity AS a
WHERE a.backend_xid IS NOT NULL
  AND a.pid <> pg_backend_pid()
  AND (a.datid IS NULL OR a.datid = (SELECT oid FROM pg_database WHERE datname = current_database()))
ORDER BY age(a.backend_xid) DESC
LIMIT 1
