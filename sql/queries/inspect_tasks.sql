-- A consumer's tasks, for kanthorq tasks list: the caller appends the condition (WHERE), the
-- order and the limit. Only the last error record is read, not every attempt's traceback.
-- attempt_base: the attempts before the last resume (kanthorq.entities.ATTEMPT_BASE_KEY).
SELECT t.event_id, t.subject, t.state, t.schedule_at, t.finalized_at, t.attempt_count,
       (t.metadata -> 'kanthorq.attempt_base')::TEXT AS attempt_base,
       t.attempted_at, cardinality(t.attempted_error) AS errors,
       t.attempted_error[array_upper(t.attempted_error, 1)]::TEXT AS last_error,
       t.created_at, t.updated_at
FROM {{tasks}} AS t
