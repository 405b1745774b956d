-- Register the schedule $1 (stream $2, subject $3, spec $4, its next tick from now $5): a new
-- one starts now (the ticks before it existed are not published); one that exists keeps its
-- last tick, and its next one unless its spec changed.
INSERT INTO kanthorq_schedule AS s (name, stream, subject, spec, last_tick, next_tick)
VALUES ($1, $2, $3, $4, kanthorq_now_ms(), $5)
ON CONFLICT (name) DO UPDATE SET
    stream = EXCLUDED.stream,
    subject = EXCLUDED.subject,
    spec = EXCLUDED.spec,
    next_tick = CASE
        WHEN s.spec <> EXCLUDED.spec OR s.next_tick = 0 THEN EXCLUDED.next_tick
        ELSE s.next_tick
    END,
    updated_at = kanthorq_now_ms()
