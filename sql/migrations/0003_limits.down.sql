DROP FUNCTION IF EXISTS kanthorq_claim_budget(TEXT, REGCLASS, INT, INT, INT, BIGINT);
DO $$
BEGIN
    IF to_regclass('kanthorq_consumer_registry') IS NOT NULL THEN
        ALTER TABLE kanthorq_consumer_registry
            DROP COLUMN IF EXISTS max_running,
            DROP COLUMN IF EXISTS rate_count,
            DROP COLUMN IF EXISTS rate_period_ms;
    END IF;
END
$$;
