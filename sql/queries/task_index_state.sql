-- Listing a consumer's tasks by state, in schedule order.
CREATE INDEX IF NOT EXISTS {{tasks_state_idx}} ON {{tasks}} (state, schedule_at, event_id)
