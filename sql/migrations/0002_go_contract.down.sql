-- Back to the schema of earlier releases: kind as text, their defaults, without the columns
-- 0002 added. (A database that KanthorQ for Go shares needs 0002: Go cannot read it without.)
DO $$
DECLARE
    tbl REGCLASS;
BEGIN
    IF to_regclass('kanthorq_consumer_registry') IS NULL THEN
        RETURN;
    END IF;
    FOR tbl IN
        SELECT to_regclass(quote_ident('kanthorq_' || id)) FROM kanthorq_consumer_registry
    LOOP
        CONTINUE WHEN tbl IS NULL;
        EXECUTE format(
            'ALTER TABLE %s ALTER COLUMN updated_at SET DEFAULT 0, '
            'DROP COLUMN IF EXISTS deadline_at',
            tbl
        );
    END LOOP;
    ALTER TABLE kanthorq_consumer_registry
        DROP COLUMN IF EXISTS txid_cursor,
        DROP COLUMN IF EXISTS skip_id,
        DROP COLUMN IF EXISTS skip_txid,
        ALTER COLUMN kind DROP DEFAULT,
        ALTER COLUMN kind TYPE VARCHAR(256) USING (CASE WHEN kind::TEXT = '1' THEN 'primary' ELSE kind::TEXT END),
        ALTER COLUMN kind SET DEFAULT 'primary',
        ALTER COLUMN subject_includes SET DEFAULT '{}',
        ALTER COLUMN cursor SET DEFAULT '',
        ALTER COLUMN attempt_max SET DEFAULT 3,
        ALTER COLUMN created_at SET DEFAULT 0,
        ALTER COLUMN updated_at SET DEFAULT 0;
    ALTER TABLE kanthorq_stream_registry
        ALTER COLUMN created_at SET DEFAULT 0,
        ALTER COLUMN updated_at SET DEFAULT 0;
END
$$;

DROP FUNCTION IF EXISTS kanthorq_horizon();
DROP TABLE IF EXISTS kanthorq_lease;
