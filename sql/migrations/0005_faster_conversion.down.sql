-- Back to the SQL functions of 0001_registry and 0002_go_contract.
CREATE OR REPLACE FUNCTION kanthorq_subject_regex(pattern TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT '^' || string_agg(
        CASE tok
            WHEN '*' THEN '[^.]+'
            WHEN '>' THEN '.+'
            ELSE regexp_replace(tok, '([!-/:-@\[-`{-~])', '\\\1', 'g')
        END,
        '\.' ORDER BY ord
    ) || '$'
    FROM unnest(string_to_array(pattern, '.')) WITH ORDINALITY AS t(tok, ord)
$$;

CREATE OR REPLACE FUNCTION kanthorq_horizon() RETURNS XID8
LANGUAGE sql STABLE PARALLEL RESTRICTED AS $$
    SELECT coalesce(
        (
            SELECT min(x)
            FROM pg_snapshot_xip(pg_current_snapshot()) AS x
            WHERE NOT EXISTS (
                SELECT 1
                FROM pg_stat_get_activity(NULL) AS a
                WHERE a.backend_xid = xid(x)
                  AND a.datid <> (SELECT oid FROM pg_database WHERE datname = current_database())
            )
        ),
        pg_snapshot_xmax(pg_current_snapshot())
    )
$$;
