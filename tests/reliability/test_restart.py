"""Item 5: the server restarts, or every backend is terminated, with 5,000 events in flight."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

import kanthorq
from tests.conftest import task_table, wait_until
from tests.reliability.conftest import (
    Worker,
    Workers,
    age_running,
    audit,
    create_ledger,
    ledger_count,
    publish_seq,
)
from tests.reliability.private_pg import PrivateServer

EVENTS = 5000
VT_MS = 300_000
POLL = 10.0  # long: a wake-up faster than this came through LISTEN, not the poll
KNOBS = {"concurrency": 20, "poll": POLL, "vt": VT_MS / 1000, "started": 0, "backoff": 0.2}
Disrupt = Callable[[], Awaitable[None]]


async def run_through(dsn: str, workers: Workers, disrupt: Disrupt) -> None:
    """Publish, run two workers, disrupt mid-run, then check that nothing is lost."""
    publisher = kanthorq.App(dsn)
    async with publisher:
        async with publisher.pool.acquire() as conn:
            await create_ledger(conn)
        await publish_seq(publisher, EVENTS)
    procs = [workers.spawn(dsn, **KNOBS) for _ in range(2)]

    async def check_alive() -> None:
        dead = [p for p in procs if not p.alive()]
        assert not dead, workers.logs()

    db = await asyncpg.connect(dsn)
    try:

        async def started() -> bool:
            await check_alive()
            return await ledger_count(db) >= EVENTS // 5

        await wait_until(started, timeout=60, interval=0.01)
    finally:
        await db.close()

    await disrupt()
    back_at = time.monotonic()

    db = await asyncpg.connect(dsn)
    try:
        before = await db.fetchval("SELECT count(*) FROM ledger")
        assert before < EVENTS, "the run ended before the disruption"
        disrupted_at = await db.fetchval("SELECT kanthorq_now_ms()")

        async def moving() -> bool:
            await check_alive()
            return await ledger_count(db) > before

        await wait_until(moving, timeout=15, interval=0.02)
        # capped backoff: the workers are back well within a few of their 5 s steps
        assert time.monotonic() - back_at < 12, workers.logs()

        # the claims the disruption interrupted: their handlers' writes failed, and so
        # may have their failure records; move them past the visibility timeout
        await age_running(db, "jobs", "attempted_at < $2", VT_MS + 1000, disrupted_at)
        table = await task_table(db, "jobs")

        async def drained() -> bool:
            await check_alive()
            return await db.fetchval(f"SELECT count(*) FROM {table} WHERE state = 101") == EVENTS

        await wait_until(drained, timeout=60, interval=0.1)
        result = await audit(db, "jobs")
        assert result.events == EVENTS
        assert result.completed == EVENTS, result.states
        assert result.unconverted == []
        assert result.without_ledger == []
        assert result.ledger_duplicates == []
        await wakes_through_listen(dsn, db, procs)
    finally:
        await db.close()
    for proc in procs:
        assert proc.alive(), workers.logs()
        assert re.search(r"retrying in|reconnecting", proc.output(100_000)), proc.output()


async def wakes_through_listen(dsn: str, db: asyncpg.Connection, procs: list[Worker]) -> None:
    """New events are handled far sooner than the 10 s poll: a notification woke a worker."""
    publisher = kanthorq.App(dsn)
    async with publisher:
        for probe in range(3):
            seq = EVENTS + probe
            sent = time.monotonic()
            await publisher.publish("job.probe", {"seq": seq})
            await wait_until(lambda seq=seq: _has_seq(db, seq), timeout=POLL * 2, interval=0.01)
            took = time.monotonic() - sent
            assert took < POLL / 4, f"probe {probe} took {took:.2f}s: LISTEN did not wake a worker"


async def _has_seq(db: asyncpg.Connection, seq: int) -> bool:
    return bool(await db.fetchval("SELECT count(*) FROM ledger WHERE seq = $1", seq))


@pytest.mark.timeout(180)
async def test_server_restart_mid_run(
    private_dsn: tuple[str, PrivateServer], workers: Workers
) -> None:
    dsn, server = private_dsn

    async def restart() -> None:
        await asyncio.to_thread(server.stop, "fast")
        server.start()  # in this thread: the server lives as long as it

    await run_through(dsn, workers, restart)


@pytest.mark.timeout(180)
async def test_every_backend_terminated_mid_run(dsn: str, workers: Workers) -> None:
    async def terminate() -> None:
        admin = await asyncpg.connect(dsn)
        try:
            killed = await admin.fetchval(
                "SELECT count(*) FROM ("
                "  SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                "  WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ") AS t"
            )
        finally:
            await admin.close()
        # two workers: each has a listener and at least one pool connection
        assert killed >= 4

    await run_through(dsn, workers, terminate)


@pytest.mark.timeout(60)
async def test_a_failure_during_an_outage_is_recorded_when_the_server_is_back(
    private_dsn: tuple[str, PrivateServer], caplog: pytest.LogCaptureFixture
) -> None:
    """A handler fails while the server is down: its failure cannot be written then. The
    worker must record it once the server is back, not leave the task running until the
    visibility timeout (300 s here) as if its worker had died."""
    dsn, server = private_dsn
    caplog.set_level(logging.WARNING, logger="kanthorq")
    app = kanthorq.App(dsn, poll_interval=0.5)
    down = asyncio.Event()
    attempts: list[int] = []

    @app.subscribe(
        "job.>", consumer="jobs", visibility_timeout=300, backoff=kanthorq.Fixed(delay=0)
    )
    async def handle(msg: kanthorq.Message) -> None:
        attempts.append(msg.task.attempt_count)
        if msg.task.attempt_count == 1:
            await asyncio.to_thread(server.stop, "fast")
            down.set()
            raise RuntimeError("failed while the database was down")

    running = asyncio.create_task(app.run())
    try:
        async with kanthorq.App(dsn) as publisher:
            event_id = await publisher.publish("job.run", {"seq": 1})
        await asyncio.wait_for(down.wait(), 20)
        # the outage lasts until the worker has tried, and failed, to record the failure
        await wait_until(
            lambda: any("could not record the failure" in r.getMessage() for r in caplog.records),
            timeout=20,
        )
        server.start()  # in this thread: the server lives as long as it
        db = await asyncpg.connect(dsn)
        try:
            table = await task_table(db, "jobs")
            await wait_until(lambda: _state_of(db, table, event_id, 101), timeout=20, interval=0.05)
            row = await db.fetchrow(f"SELECT * FROM {table} WHERE event_id = $1", event_id)
        finally:
            await db.close()
        assert attempts == [1, 2]
        assert "failed while the database was down" in row["attempted_error"][0]
    finally:
        await app.shutdown()
        await asyncio.wait_for(running, 30)


async def _state_of(db: asyncpg.Connection, table: str, event_id: str, state: int) -> bool:
    return await db.fetchval(f"SELECT state FROM {table} WHERE event_id = $1", event_id) == state
