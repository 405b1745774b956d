"""Limits across workers (issue 13): three `kanthorq run` processes of one consumer share
its max_running and its rate; the database's claim enforces both. Times are the database's
(the started and ledger tables' ``at``, the tasks' ``attempted_at``)."""

from __future__ import annotations

import signal

import asyncpg

import kanthorq
from tests.conftest import task_table, wait_until
from tests.reliability.conftest import Workers, create_ledger, ledger_count, publish_seq

PROCESSES = 3


async def test_max_running_holds_across_three_processes(
    dsn: str, db: asyncpg.Connection, workers: Workers
) -> None:
    await create_ledger(db)
    async with kanthorq.App(dsn) as app:
        await publish_seq(app, 60)
    procs = [
        workers.spawn(dsn, concurrency=10, max_running=5, sleep_ms=100, poll=0.2)
        for _ in range(PROCESSES)
    ]

    async def done() -> bool:
        assert all(p.alive() for p in procs), workers.logs()
        return await ledger_count(db) == 60

    await wait_until(done, timeout=60)
    rows = await db.fetch(
        "SELECT s.at AS started, l.at AS ended, s.pid FROM started AS s "
        "JOIN ledger AS l ON l.event_id = s.event_id AND l.attempt = s.attempt"
    )
    assert len(rows) == 60
    # at most 5 at once: sweep the starts and ends (an end before a start at the same ms)
    points = sorted([(r["started"], 1) for r in rows] + [(r["ended"], -1) for r in rows])
    running, most = 0, 0
    for _, step in points:
        running += step
        most = max(most, running)
    assert most <= 5, workers.logs()
    assert most >= 4  # the limit is used, not starved
    assert len({r["pid"] for r in rows}) > 1  # shared by the processes


async def test_a_rate_holds_across_three_processes(
    dsn: str, db: asyncpg.Connection, workers: Workers
) -> None:
    await create_ledger(db)
    async with kanthorq.App(dsn) as app:
        await publish_seq(app, 400)
    procs = [
        workers.spawn(dsn, concurrency=10, rate="20/1", poll=0.2, started=0)
        for _ in range(PROCESSES)
    ]
    table = None

    async def ten_seconds_of_claims() -> bool:
        nonlocal table
        assert all(p.alive() for p in procs), workers.logs()
        if table is None:
            if not await db.fetchval(
                "SELECT EXISTS (SELECT 1 FROM kanthorq_consumer_registry WHERE name = 'jobs')"
            ):
                return False
            table = await task_table(db, "jobs")
        span = await db.fetchval(
            f"SELECT kanthorq_now_ms() - min(attempted_at) FROM {table} WHERE attempt_count > 0"
        )
        return span is not None and span > 10_500

    await wait_until(ten_seconds_of_claims, timeout=60)
    for proc in procs:
        proc.signal(signal.SIGTERM)
    claims = sorted(
        r["attempted_at"]
        for r in await db.fetch(f"SELECT attempted_at FROM {table} WHERE attempt_count > 0")
    )
    first = claims[0]
    in_ten = [t for t in claims if t < first + 10_000]
    assert 180 <= len(in_ten) <= 220, len(in_ten)
    # in no window of one second are there more than 20
    busiest = max(sum(1 for u in claims if t <= u < t + 1000) for t in claims)
    assert busiest <= 20, busiest
    assert await db.fetchval(f"SELECT max(attempt_count) FROM {table}") == 1
