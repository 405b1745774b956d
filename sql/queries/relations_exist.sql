-- Whether every relation in $1 (quoted names, e.g. a task table and its indexes) exists.
-- A cheap catalog lookup that takes no lock on the relations, run before DDL that would.
SELECT coalesce(bool_and(to_regclass(n) IS NOT NULL), true)
FROM unnest($1::TEXT[]) AS n
