-- What a stream or task table lacks. $1 the table (quoted), $2 the columns it needs, $3 its
-- indexes (quoted). A catalog lookup that takes no lock on the table, run before DDL that
-- would. building: an index build on the table is in progress (another process's).
SELECT
    to_regclass($1) IS NOT NULL AS present,
    ARRAY(
        SELECT c FROM unnest($2::TEXT[]) AS c
        WHERE NOT EXISTS (
            SELECT 1 FROM pg_attribute AS a
            WHERE a.attrelid = to_regclass($1) AND a.attname = c AND NOT a.attisdropped
        )
    ) AS missing_columns,
    ARRAY(SELECT i FROM unnest($3::TEXT[]) AS i WHERE to_regclass(i) IS NULL) AS missing_indexes,
    ARRAY(
        SELECT i FROM unnest($3::TEXT[]) AS i
        JOIN pg_index AS x ON x.indexrelid = to_regclass(i)
        WHERE NOT x.indisvalid
    ) AS invalid_indexes,
    EXISTS (
        SELECT 1 FROM pg_stat_progress_create_index AS p WHERE p.relid = to_regclass($1)
    ) AS building
