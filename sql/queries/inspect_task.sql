-- One task with its event (found = false when the event no longer exists), for kanthorq
-- tasks show. $1 event id.
SELECT t.event_id, t.subject, t.state, t.schedule_at, t.finalized_at, t.attempt_count,
       t.attempted_at, t.attempted_error::TEXT[] AS attempted_error, t.metadata::TEXT AS metadata,
       t.created_at, t.updated_at,
       e.id IS NOT NULL AS found, e.subject AS event_subject, e.body,
       e.metadata::TEXT AS event_metadata, e.created_at AS event_created_at
FROM {{tasks}} AS t
LEFT JOIN {{stream}} AS e ON e.id = t.event_id
WHERE t.event_id = $1
