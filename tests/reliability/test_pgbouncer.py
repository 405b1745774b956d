"""Items 6, 9 and 10: kanthorq behind PgBouncer in transaction pooling mode.

Each test starts a PgBouncer of its own (``tests/reliability/pgbouncer.py``) in front of the
test server, with a pool of a few server connections that every client shares.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

import kanthorq
from kanthorq.sqlfiles import migrations
from tests.conftest import with_database
from tests.reliability import pgbouncer
from tests.reliability.pgbouncer import Bouncer

pytestmark = pytest.mark.skipif(
    pgbouncer.binary() is None,
    reason="PgBouncer is not installed (Debian: apt-get install pgbouncer); CI installs it",
)

OPENS = 24
_counter = itertools.count()


@pytest.fixture
def bouncer(server_dsn: str) -> Iterator[Bouncer]:
    started = Bouncer(server_dsn).start()
    try:
        yield started
    finally:
        started.stop()


@asynccontextmanager
async def unmigrated_database(server_dsn: str) -> AsyncIterator[str]:
    """An empty database on the test server (its name), dropped afterwards."""
    name = f"kq_pgb_{os.getpid()}_{next(_counter)}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        try:
            yield name
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def database_of(dsn: str) -> str:
    return dsn.rsplit("/", 1)[1].split("?", 1)[0]


# ---- item 6: migrating through a transaction pooler ---------------------------------------


async def open_all(apps: list[kanthorq.App], timeout: float) -> list[str]:
    """Open the apps at once; what went wrong with each that did not open in time."""
    tasks = [asyncio.ensure_future(app.open()) for app in apps]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    failed = [f"{type(t.exception()).__name__}: {t.exception()}" for t in done if t.exception()]
    return failed + [f"still opening after {timeout:.0f}s"] * len(pending)


@pytest.mark.timeout(180)
async def test_concurrent_opens_on_a_fresh_database_all_finish(
    server_dsn: str, bouncer: Bouncer
) -> None:
    async with unmigrated_database(server_dsn) as name:
        through = bouncer.dsn(name)
        apps = [kanthorq.App(through, pool_size=2, statement_cache_size=0) for _ in range(OPENS)]
        late = kanthorq.App(through, pool_size=1, statement_cache_size=0)
        try:
            assert await open_all(apps, timeout=60) == []
            # and no lock is left behind for the opens that come later
            assert await open_all([late], timeout=30) == []
            ids = await asyncio.gather(*(app.publish("m.opened", b"x") for app in apps[:4]))
            assert len(set(ids)) == 4
        finally:
            await asyncio.gather(*(app.close() for app in [*apps, late]), return_exceptions=True)
        direct = await asyncpg.connect(with_database(server_dsn, name))
        try:
            applied = await direct.fetchval("SELECT count(*) FROM kanthorq_migration")
            assert applied == len(migrations())
            held = await direct.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            assert held == 0
        finally:
            await direct.close()
