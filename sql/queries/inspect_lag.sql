-- A consumer's lag, for kanthorq show: the events past its cursor, in the (txid, id) order
-- conversion reads, scanned through that index up to $3 of them; matched: those the
-- consumer's filters select, so that conversion would turn into tasks. Exact while scanned
-- is below $3. $1 cursor txid (text), $2 cursor, $4 include filters, $5 exclude filters,
-- $6 and $7 the events a takeover passed over (ids up to $6 of transactions below $7).
WITH scanned AS (
    SELECT e.subject
    FROM {{stream}} AS e
    WHERE (e.txid, e.id) > ($1::TEXT::XID8, $2::TEXT)
      AND NOT (e.id <= $6::TEXT AND e.txid < $7::TEXT::XID8)
    ORDER BY e.txid, e.id
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
