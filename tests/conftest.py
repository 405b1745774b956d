"""Test fixtures: a real PostgreSQL, one fresh database per test.

The server is ``$KANTHORQ_TEST_DSN`` when set, else the embedded server (pgserver) in a
temporary folder. A migrated template database is built once per run; each test gets its
own ``CREATE DATABASE ... TEMPLATE`` copy, dropped afterwards: the public helpers of
:mod:`kanthorq.testing.databases`, which kanthorq's pytest plugin uses too.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import kanthorq
from kanthorq.store import ConsumerQueries, Registry
from kanthorq.testing import databases

# kanthorq.testing's helpers, by the names the tests use
with_database = databases.with_database
fresh_database = databases.fresh_database
scratch_database = databases.scratch_database


@pytest.fixture
def embedded_home() -> Iterator[Path]:
    """A $KANTHORQ_HOME outside pytest's temporary root. Under root the server runs as another
    user, who must be able to reach it, and each new pytest session on the machine (another
    run beside this one) makes that root private again (0700): initdb then failed now and
    then with "Permission denied"."""
    folder = Path(tempfile.mkdtemp(prefix="kq_home_"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def server_dsn(tmp_path_factory: pytest.TempPathFactory) -> str:
    return databases.server_dsn(Path(tmp_path_factory.mktemp("pg")))


@pytest.fixture(scope="session")
async def template_db(server_dsn: str) -> AsyncIterator[str]:
    async with databases.template_database(server_dsn) as name:
        yield name


@pytest.fixture
async def dsn(server_dsn: str, template_db: str) -> AsyncIterator[str]:
    """A migrated database of its own for this test."""
    async with databases.fresh_database(server_dsn, template_db) as url:
        yield url


@pytest.fixture
async def db(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to the test's database, for arranging and asserting."""
    conn = await asyncpg.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def make_app(dsn: str) -> Callable[..., kanthorq.App]:
    """Build an App on the test's database (options as keyword arguments)."""

    def build(**options: Any) -> kanthorq.App:
        options.setdefault("poll_interval", 0.5)
        options.setdefault("shutdown_timeout", 5.0)
        return kanthorq.App(dsn, **options)

    return build


class Running:
    """An app whose workers run in a background task until the test ends."""

    def __init__(self, app: kanthorq.App) -> None:
        self.app = app
        self.task: asyncio.Task[None] | None = None

    async def start(self, consumers: list[str] | None = None) -> None:
        self.task = asyncio.create_task(self.app.run(consumers))
        await wait_until(self._ready, timeout=10)

    def _ready(self) -> bool:
        if self.task is not None and self.task.done():
            self.task.result()  # raise what run() raised
        listener = self.app.listener
        return listener is not None and listener.connected.is_set()

    async def stop(self) -> None:
        if self.task is None:
            return
        await self.app.shutdown()
        await asyncio.wait_for(self.task, 30)
        self.task = None


@pytest.fixture
async def start_app() -> AsyncIterator[Callable[..., Awaitable[Running]]]:
    """``running = await start_app(app)``: run its workers; stopped after the test."""
    started: list[Running] = []

    async def start(app: kanthorq.App, consumers: list[str] | None = None) -> Running:
        running = Running(app)
        started.append(running)
        await running.start(consumers)
        return running

    yield start
    for running in started:
        await running.stop()


async def wait_until(
    predicate: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.02
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        await asyncio.sleep(interval)


def registry(pool: asyncpg.Pool, dsn: str | None) -> Registry:
    """A registry on ``pool`` that creates streams on connections of its own to ``dsn``."""
    assert dsn is not None

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(dsn)

    return Registry(pool, connect)


async def converted(queries: ConsumerQueries, pool: asyncpg.Pool, limit: int = 1000) -> int:
    """Convert up to ``limit`` events: the tasks inserted. It waits out a moment when
    conversion is held back by a transaction that may still commit events (another test's,
    in another database, can do that for an instant: a savepoint's subtransaction does not
    say which database it belongs to)."""
    inserted = scanned = 0

    async def step() -> bool:
        nonlocal inserted, scanned
        result = await queries.convert(pool, limit - scanned)
        inserted += result.inserted
        scanned += result.scanned
        return scanned >= limit or not result.waiting

    await wait_until(step, timeout=20)
    return inserted


async def task_table(conn: asyncpg.Connection, consumer: str) -> str:
    """The quoted task table of a consumer."""
    consumer_id = await conn.fetchval(
        "SELECT id FROM kanthorq_consumer_registry WHERE name = $1", consumer
    )
    assert consumer_id, f"consumer {consumer!r} is not registered"
    return f'"kanthorq_{consumer_id}"'


async def stream_table(conn: asyncpg.Connection, stream: str = "default") -> str:
    """The quoted event table of a stream."""
    stream_id = await conn.fetchval(
        "SELECT id FROM kanthorq_stream_registry WHERE name = $1", stream
    )
    assert stream_id, f"stream {stream!r} is not registered"
    return f'"kanthorq_{stream_id}"'


async def age_running(db: asyncpg.Connection, consumer: str, ms: int, event_id: str = "") -> None:
    """Move time forward ``ms`` for the consumer's running tasks (only ``event_id``'s when
    given): their claims happened ``ms`` earlier, and their deadlines are ``ms`` nearer."""
    table = await task_table(db, consumer)
    await db.execute(
        f"UPDATE {table} SET attempted_at = attempted_at - $1, deadline_at = deadline_at - $1 "
        "WHERE state = 2 AND ($2 = '' OR event_id = $2)",
        ms,
        event_id,
    )


async def task_row(db: asyncpg.Connection, consumer: str, event_id: str) -> asyncpg.Record | None:
    """The consumer's task for the event, or None."""
    table = await task_table(db, consumer)
    return await db.fetchrow(f"SELECT * FROM {table} WHERE event_id = $1", event_id)


async def wait_state(
    db: asyncpg.Connection, consumer: str, event_id: str, state: int, timeout: float = 10.0
) -> asyncpg.Record:
    """Wait until the consumer's task for the event is in ``state``; return its row."""

    async def reached() -> asyncpg.Record | None:
        row = await task_row(db, consumer, event_id)
        return row if row is not None and row["state"] == state else None

    row: asyncpg.Record = await wait_until(reached, timeout=timeout)
    return row


async def task_states(conn: asyncpg.Connection, consumer: str) -> dict[int, int]:
    """How many tasks the consumer has in each state code."""
    table = await task_table(conn, consumer)
    rows = await conn.fetch(f"SELECT state, count(*) AS n FROM {table} GROUP BY state")
    return {row["state"]: row["n"] for row in rows}
