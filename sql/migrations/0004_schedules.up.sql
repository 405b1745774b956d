-- Periodic events (kanthorq/periodic.py): one row per schedule. last_tick is the newest tick
-- published (ms), next_tick the one after it; a process publishes a tick only by moving
-- last_tick forward, in the transaction that writes the tick's event.
CREATE TABLE IF NOT EXISTS kanthorq_schedule (
    name       VARCHAR(256) NOT NULL PRIMARY KEY,
    stream     VARCHAR(256) NOT NULL,
    subject    VARCHAR(256) NOT NULL,
    spec       VARCHAR(256) NOT NULL,
    last_tick  BIGINT       NOT NULL DEFAULT 0,
    next_tick  BIGINT       NOT NULL DEFAULT 0,
    created_at BIGINT       NOT NULL DEFAULT kanthorq_now_ms(),
    updated_at BIGINT       NOT NULL DEFAULT kanthorq_now_ms()
);
