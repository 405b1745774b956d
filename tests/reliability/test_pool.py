"""Item 8: a pool of 2 connections, 50 handlers at once, all of them using that pool."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

import kanthorq
from tests.conftest import Running, task_table, wait_until
from tests.reliability.conftest import publish_seq

Starter = Callable[..., Awaitable[Running]]
EVENTS = 600
WINDOW = 5.0


@pytest.mark.timeout(120)
async def test_pool_exhaustion_retries_and_never_stalls(
    dsn: str, ledger_db: asyncpg.Connection, start_app: Starter
) -> None:
    db = ledger_db
    app = kanthorq.App(dsn, pool_size=2, poll_interval=0.5)
    timeouts = 0

    @app.subscribe(
        "job.>",
        consumer="jobs",
        concurrency=50,
        max_retries=10_000,
        backoff=kanthorq.Fixed(delay=0.05, jitter=0.5),
    )
    async def handle(msg: kanthorq.Message) -> None:
        nonlocal timeouts
        try:
            conn = await app.pool.acquire(timeout=0.2)
        except TimeoutError:
            timeouts += 1
            raise
        try:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO ledger (event_id, seq, attempt, pid) VALUES ($1, $2, $3, $4)",
                    msg.event.id,
                    msg.json()["seq"],
                    msg.task.attempt_count,
                    os.getpid(),
                )
                await asyncio.sleep(0.01)  # hold the connection a while, as real work does
                await msg.ack(conn=conn)
        finally:
            await app.pool.release(conn)

    async with app:  # publishing shares the two connections too
        await publish_seq(app, EVENTS)
        await start_app(app)
        table = await task_table(db, "jobs")
        samples: list[tuple[float, int]] = []
        loop = asyncio.get_running_loop()

        async def done() -> bool:
            completed = int(await db.fetchval(f"SELECT count(*) FROM {table} WHERE state = 101"))
            now = loop.time()
            samples.append((now, completed))
            stalled = [(t, n) for t, n in samples if now - t >= WINDOW and n == completed]
            assert completed == EVENTS or not stalled, f"no progress for {WINDOW}s: {samples}"
            return completed == EVENTS

        await wait_until(done, timeout=100, interval=0.25)

    assert timeouts > 0, "the pool was never exhausted: the test did not test anything"
    states = dict(await db.fetch(f"SELECT state, count(*) FROM {table} GROUP BY state"))
    assert states == {101: EVENTS}  # nothing discarded, nothing stranded
    assert await db.fetchval("SELECT count(DISTINCT seq) FROM ledger") == EVENTS
    assert await db.fetchval("SELECT count(*) FROM ledger") == EVENTS
    # the acquire time-outs were recorded as failed attempts, then retried
    errors = await db.fetch(
        f"SELECT unnest(attempted_error) AS e FROM {table} WHERE attempt_count > 1"
    )
    assert errors
    assert all("TimeoutError" in json.loads(r["e"])["error"] for r in errors)
