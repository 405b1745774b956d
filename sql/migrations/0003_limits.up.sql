-- Limits across workers (kanthorq/limits.py): a consumer's max_running and rate, as the
-- consumer's code last registered them (0: none), for inspection; and the claim's budget.

ALTER TABLE kanthorq_consumer_registry
    ADD COLUMN IF NOT EXISTS max_running    INT    NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS rate_count     INT    NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS rate_period_ms BIGINT NOT NULL DEFAULT 0;

-- How many tasks a claim of the consumer whose task table is `tasks` may take: at most
-- `wanted`, no more than max_running minus those running now, and no more than rate_count
-- minus those claimed in the last rate_period_ms (0: no such limit). Claims of one consumer
-- take this in turn (a transaction-scoped advisory lock on `lock_key`, held until the
-- claim's statement commits), and each count reads a snapshot taken after the lock (a
-- VOLATILE function's statements each take their own), so two processes cannot both count
-- the same free slot. The rate counts attempted_at, which every claim sets: the consumer's
-- task table has an index on it (task_index_attempted.sql).
CREATE OR REPLACE FUNCTION kanthorq_claim_budget(
    lock_key TEXT, tasks REGCLASS, wanted INT, max_running INT, rate_count INT,
    rate_period_ms BIGINT
) RETURNS INT
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    budget INT := wanted;
    counted BIGINT;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(lock_key));
    IF max_running > 0 THEN
        EXECUTE format('SELECT count(*) FROM %s WHERE state = 2', tasks) INTO counted;
        budget := least(budget, max_running - counted);
    END IF;
    IF rate_count > 0 THEN
        EXECUTE format('SELECT count(*) FROM %s WHERE attempted_at > $1', tasks)
            INTO counted USING kanthorq_now_ms() - rate_period_ms;
        budget := least(budget, rate_count - counted);
    END IF;
    RETURN greatest(budget, 0);
END
$$;
