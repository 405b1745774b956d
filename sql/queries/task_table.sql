-- The task table of one consumer: at most one task per event.
CREATE TABLE IF NOT EXISTS {{tasks}} (
    event_id        VARCHAR(64)  NOT NULL PRIMARY KEY,
    subject         VARCHAR(256) NOT NULL,
    state           SMALLINT     NOT NULL DEFAULT 1,
    schedule_at     BIGINT       NOT NULL DEFAULT kanthorq_now_ms(),
    finalized_at    BIGINT       NOT NULL DEFAULT 0,
    attempt_count   SMALLINT     NOT NULL DEFAULT 0,
    attempted_at    BIGINT       NOT NULL DEFAULT 0,
    attempted_error JSONB[]      NOT NULL DEFAULT '{}',
    metadata        JSONB        NOT NULL DEFAULT '{}',
    created_at      BIGINT       NOT NULL DEFAULT kanthorq_now_ms(),
    updated_at      BIGINT       NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS {{tasks_state_idx}} ON {{tasks}} (state, schedule_at, event_id);
-- claims read this one: only the tasks that can run
CREATE INDEX IF NOT EXISTS {{tasks_ready_idx}} ON {{tasks}} (schedule_at, event_id)
    WHERE state IN (1, 102);
-- the rescue pass reads this one: only the running tasks
CREATE INDEX IF NOT EXISTS {{tasks_running_idx}} ON {{tasks}} (attempted_at) WHERE state = 2;
