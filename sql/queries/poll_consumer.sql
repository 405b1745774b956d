-- One consumer's part of the workers' poll (kanthorq/poller.py), which asks it of every
-- consumer of a process in one statement, so idle consumers cost one statement per poll
-- interval in all: whether it has events to convert (past its position, or its cursor was
-- moved by another client: a takeover), in how many ms its next runnable task is due (NULL:
-- none), and whether a running task is past its deadline (rescue.sql's condition). $1 is
-- the consumer's name (the poller numbers each part's parameter).
SELECT $1::TEXT AS name,
       coalesce(
           (
               SELECT r.txid_cursor <> r.cursor OR EXISTS (
                   SELECT 1 FROM {{stream}} AS e
                   WHERE (e.txid, e.id) > (r.cursor_txid, r.cursor)
               )
               FROM kanthorq_consumer_registry AS r
               WHERE r.name = $1::TEXT
           ),
           false
       ) AS convert,
       (SELECT min(t.schedule_at) FROM {{tasks}} AS t WHERE t.state IN (1, 102)) - now.ms
           AS due_in,
       EXISTS (
           SELECT 1 FROM {{tasks}} AS t
           WHERE t.state = 2
             AND greatest(
                     t.deadline_at,
                     t.attempted_at + (
                         SELECT r.visibility_timeout FROM kanthorq_consumer_registry AS r
                         WHERE r.name = $1::TEXT
                     )
                 ) < now.ms
       ) AS rescue
FROM (SELECT kanthorq_now_ms() AS ms) AS now
