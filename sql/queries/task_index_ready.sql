-- Claims read this one: only the tasks that can run.
CREATE INDEX IF NOT EXISTS {{tasks_ready_idx}} ON {{tasks}} (schedule_at, event_id)
    WHERE state IN (1, 102)
