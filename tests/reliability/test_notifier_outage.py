"""Item 9: a notifier that cannot reach the server backs off and warns once, not once per
publish; publishing itself goes on, and notifying comes back by itself."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest

import kanthorq
from tests.conftest import stream_table, wait_until

PUBLISHES = 200


def notifier_records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "kanthorq.publisher" and r.levelno == level
    ]


async def test_a_failing_notifier_warns_once_and_recovers(
    server_dsn: str, dsn: str, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kanthorq")
    name = await db.fetchval("SELECT current_database()")
    app = kanthorq.App(dsn, pool_size=1)
    admin = await asyncpg.connect(server_dsn)  # ALTER DATABASE runs from another database
    try:
        await publish_through_an_outage(app, admin, db, name, caplog)
    finally:
        await admin.close()


async def publish_through_an_outage(
    app: kanthorq.App,
    admin: asyncpg.Connection,
    db: asyncpg.Connection,
    name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with app:
        first = await app.publish("a.b", b"first")
        pool_pid = await app.pool.fetchval("SELECT pg_backend_pid()")
        # no new connection to this database; the notifier's own connection is cut
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            cut = await db.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid NOT IN (pg_backend_pid(), $1)",
                pool_pid,
            )
            assert cut == 1  # the notifier's
            ids = [await app.publish("a.b", str(n).encode()) for n in range(PUBLISHES)]
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        warned = notifier_records(caplog, logging.WARNING)
        assert len(warned) == 1, warned
        assert "could not notify stream" in warned[0]
        assert "polling" in warned[0]

        async def recovered() -> bool:
            # at once: the first notifies in its own statement, and the others (written
            # together after it) through the notifier
            await asyncio.gather(*(app.publish("a.b", b"later") for _ in range(3)))
            return bool(notifier_records(caplog, logging.INFO))

        await wait_until(recovered, timeout=30, interval=0.2)  # past the backoff
    assert len(notifier_records(caplog, logging.WARNING)) == 1
    table = await stream_table(db)
    stored = await db.fetchval(f"SELECT count(*) FROM {table} WHERE id = ANY($1)", [first, *ids])
    assert stored == PUBLISHES + 1
