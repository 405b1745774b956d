-- The rescue pass reads this one: only the running tasks.
CREATE INDEX IF NOT EXISTS {{tasks_running_idx}} ON {{tasks}} (attempted_at) WHERE state = 2
