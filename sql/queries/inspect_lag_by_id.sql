-- inspect_lag by id alone: for a consumer that another client (KanthorQ for Go) converts,
-- whose position is its cursor alone, or a stream without the txid column (created by
-- another client, not yet read by a consumer of this package). $1 is unused.
WITH scanned AS (
    SELECT e.subject
    FROM {{stream}} AS e
    WHERE e.id > $2::TEXT AND $1::TEXT IS NOT NULL
    ORDER BY e.id
    LIMIT $3
),
filters AS (
    SELECT ARRAY(SELECT kanthorq_subject_regex(p) FROM unnest($4::TEXT[]) AS p) AS includes,
           ARRAY(SELECT kanthorq_subject_regex(p) FROM unnest($5::TEXT[]) AS p) AS excludes
)
SELECT count(*) AS scanned,
       count(*) FILTER (
           WHERE s.subject ~ ANY (f.includes) AND NOT s.subject ~ ANY (f.excludes)
       ) AS matched
FROM scanned AS s CROSS JOIN filters AS f
