-- The task table of a new consumer: at most one task per event. KanthorQ for Go's columns,
-- and deadline_at: when the running attempt's worker must have finished (ms; 0 when no
-- worker of this package set one), which rescues read (sql/queries/rescue.sql). A task
-- table that another client created gets the rest online: kanthorq/tables.py.
-- Its indexes: task_index_*.sql.
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
    updated_at      BIGINT       NOT NULL DEFAULT kanthorq_now_ms(),
    deadline_at     BIGINT       NOT NULL DEFAULT 0
);
