-- deadline_at on a task table that another client created (a constant default: no rewrite).
ALTER TABLE {{tasks}} ADD COLUMN IF NOT EXISTS deadline_at BIGINT NOT NULL DEFAULT 0
