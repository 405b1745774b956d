-- The two functions that every conversion calls, made cheaper; what they return is unchanged.
--
-- kanthorq_subject_regex: a SQL function whose body has a FROM cannot be inlined, so each
-- statement that called it planned its body again (about 0.15 ms per filter per conversion).
-- PL/pgSQL keeps the plan of its query for the session.
CREATE OR REPLACE FUNCTION kanthorq_subject_regex(pattern TEXT) RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    RETURN (
        SELECT '^' || string_agg(
            CASE tok
                WHEN '*' THEN '[^.]+'
                WHEN '>' THEN '.+'
                ELSE regexp_replace(tok, '([!-/:-@\[-`{-~])', '\\\1', 'g')
            END,
            '\.' ORDER BY ord
        ) || '$'
        FROM unnest(string_to_array(pattern, '.')) WITH ORDINALITY AS t(tok, ord)
    );
END
$$;

-- kanthorq_horizon: the same horizon (see 0002_go_contract), in PL/pgSQL for the same reason
-- (its body has subqueries, so SQL could not inline it either), and with the server's
-- activity read once, not once for each running transaction of the snapshot, and not at all
-- when none is running. A transaction of another database is passed over; one whose
-- database is unknown still holds the horizon back. STABLE: its query runs in the calling
-- statement's snapshot, the one the conversion's scan uses.
CREATE OR REPLACE FUNCTION kanthorq_horizon() RETURNS XID8
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED AS $$
BEGIN
    RETURN coalesce(
        (
            SELECT min(x)
            FROM pg_snapshot_xip(pg_current_snapshot()) AS x
            WHERE xid(x) NOT IN (
                SELECT a.backend_xid
                FROM pg_stat_get_activity(NULL) AS a
                WHERE a.backend_xid IS NOT NULL
                  AND a.datid <> (SELECT oid FROM pg_database WHERE datname = current_database())
            )
        ),
        pg_snapshot_xmax(pg_current_snapshot())
    );
END
$$;
