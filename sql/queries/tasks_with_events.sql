-- The tasks $1 (event ids) with their events, in the shape a claim returns: what a hook
-- needs to build a Message for a task this worker did not claim (a rescued one).
SELECT t.event_id, t.subject, t.state, t.schedule_at, t.finalized_at, t.attempt_count,
       t.attempted_at, t.attempted_error, t.metadata, t.created_at, t.updated_at,
       e.id IS NOT NULL AS found, e.body, e.metadata AS event_metadata,
       e.created_at AS event_created_at
FROM {{tasks}} AS t
LEFT JOIN {{stream}} AS e ON e.id = t.event_id
WHERE t.event_id = ANY ($1::TEXT[])
ORDER BY t.event_id
