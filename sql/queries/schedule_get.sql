-- The schedule $1's last tick, and the time now (ms), by the database's clock.
SELECT last_tick, kanthorq_now_ms() AS now FROM kanthorq_schedule WHERE name = $1
