-- Drops every stream and consumer table the registries name, then the registries.
DO $$
DECLARE
    entity_id TEXT;
BEGIN
    IF to_regclass('kanthorq_consumer_registry') IS NOT NULL THEN
        FOR entity_id IN SELECT id FROM kanthorq_consumer_registry LOOP
            EXECUTE format('DROP TABLE IF EXISTS %I', 'kanthorq_' || entity_id);
        END LOOP;
    END IF;
    IF to_regclass('kanthorq_stream_registry') IS NOT NULL THEN
        FOR entity_id IN SELECT id FROM kanthorq_stream_registry LOOP
            EXECUTE format('DROP TABLE IF EXISTS %I', 'kanthorq_' || entity_id);
        END LOOP;
    END IF;
END
$$;

DROP TABLE IF EXISTS kanthorq_consumer_registry;
DROP TABLE IF EXISTS kanthorq_stream_registry;
DROP FUNCTION IF EXISTS kanthorq_subject_regex(TEXT);
DROP FUNCTION IF EXISTS kanthorq_now_ms();
