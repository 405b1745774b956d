"""``kanthorq run --workers N`` (issue 14): a supervisor keeps N worker processes alive.
A child killed under load loses nothing and is restarted; SIGTERM to the supervisor stops
every child within the shutdown timeout, cleanly; a child that keeps dying stops it all with
a non-zero exit."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import asyncpg

import kanthorq
from tests.conftest import task_table, wait_until
from tests.reliability.conftest import (
    Worker,
    Workers,
    audit,
    create_ledger,
    ledger_count,
    publish_seq,
)

EVENTS = 3000
SHUTDOWN = 5.0


def children(supervisor: Worker) -> list[int]:
    """The supervisor's worker processes (their pids, from /proc)."""
    path = Path(f"/proc/{supervisor.pid}/task/{supervisor.pid}/children")
    try:
        return [int(pid) for pid in path.read_text().split()]
    except OSError:
        return []


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


async def test_a_child_killed_under_load_loses_nothing_and_comes_back(
    dsn: str, db: asyncpg.Connection, workers: Workers
) -> None:
    await create_ledger(db)
    async with kanthorq.App(dsn) as app:
        await publish_seq(app, EVENTS)
    supervisor = workers.spawn(
        dsn, args=("--workers", "2"), sleep_ms=5, concurrency=20, vt=5, shutdown=SHUTDOWN
    )
    await wait_until(lambda: len(children(supervisor)) == 2, timeout=30)
    first = children(supervisor)

    async def some_done() -> bool:
        assert supervisor.alive(), workers.logs()
        return await ledger_count(db) >= EVENTS // 4

    await wait_until(some_done, timeout=60)
    victim = first[0]
    os.kill(victim, signal.SIGKILL)  # mid-run
    await wait_until(
        lambda: victim not in children(supervisor) and len(children(supervisor)) == 2,
        timeout=30,
    )  # restarted

    async def all_done() -> bool:
        assert supervisor.alive(), workers.logs()
        return await ledger_count(db) >= EVENTS

    await wait_until(all_done, timeout=120)
    result = await audit(db, "jobs")
    assert result.unconverted == []
    assert result.without_ledger == []
    assert result.ledger_duplicates == []
    assert result.completed == EVENTS
    assert "restarting it in" in supervisor.output(100_000)
    assert "was killed by SIGKILL" in supervisor.output(100_000)


async def test_sigterm_stops_every_child_within_the_shutdown_timeout(
    dsn: str, db: asyncpg.Connection, workers: Workers
) -> None:
    await create_ledger(db)
    async with kanthorq.App(dsn) as app:
        await publish_seq(app, 500, long=True)
    supervisor = workers.spawn(
        dsn, args=("--workers", "3"), long_ms=1000, concurrency=5, shutdown=SHUTDOWN
    )
    await wait_until(lambda: len(children(supervisor)) == 3, timeout=30)
    kids = children(supervisor)
    await wait_until(lambda: ledger_count(db), timeout=30)  # handlers are running
    started = time.monotonic()
    supervisor.signal(signal.SIGTERM)
    code = await asyncio.to_thread(supervisor.proc.wait, SHUTDOWN + 10)
    took = time.monotonic() - started
    assert code == 0, workers.logs()
    assert took < SHUTDOWN + 5, took
    assert not any(alive(pid) for pid in kids)
    # what did not finish was handed back at once, not left running
    table = await task_table(db, "jobs")
    running = await db.fetchval(f"SELECT count(*) FROM {table} WHERE state = 2")
    assert running == 0


async def test_a_child_that_keeps_dying_stops_the_supervisor_with_an_error(
    workers: Workers,
) -> None:
    supervisor = workers.spawn("postgresql://nobody@127.0.0.1:1/nowhere", args=("--workers", "2"))
    code = await asyncio.to_thread(supervisor.proc.wait, 120)
    assert code == 1, workers.logs()
    assert "could not be kept alive" in supervisor.output(100_000)
