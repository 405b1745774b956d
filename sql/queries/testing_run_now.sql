-- For kanthorq.testing.drain(scheduled=True): the consumer's available and retryable tasks
-- that are scheduled later become due now. Returns how many moved.
WITH moved AS (
    UPDATE {{tasks}} AS t
    SET schedule_at = kanthorq_now_ms(), updated_at = kanthorq_now_ms()
    WHERE t.state IN (1, 102) AND t.schedule_at > kanthorq_now_ms()
    RETURNING 1
)
SELECT count(*) FROM moved
