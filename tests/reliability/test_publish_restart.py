"""Item 8: publishing while PostgreSQL restarts raises only kanthorq's PublishError, which
says whether the event may have been written; nothing returned is lost, and publishing
recovers by itself."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import asyncpg
import pytest

import kanthorq
from tests.conftest import stream_table, wait_until
from tests.reliability.private_pg import PrivateServer

PUBLISHERS = 6
BATCH = 5
# causes that can only come from opening a connection: nothing was written
NO_CONNECTION = (ConnectionRefusedError, asyncpg.CannotConnectNowError)


@dataclass
class Tally:
    returned: list[str] = field(default_factory=list)
    failed: list[tuple[BaseException, int]] = field(default_factory=list)  # and its events

    def ok(self) -> int:
        return len(self.returned)


async def publish_until(app: kanthorq.App, n: int, stop: asyncio.Event, tally: Tally) -> None:
    """Publish one event (odd publishers) or a batch (even ones) after another."""
    while not stop.is_set():
        size = 1 if n % 2 else BATCH
        try:
            if size == 1:
                tally.returned.append(await app.publish("a.b", b"x"))
            else:
                tally.returned += await app.publish_many([("a.b", b"x")] * size)
        except Exception as exc:
            tally.failed.append((exc, size))
            await asyncio.sleep(0.005)  # pacing while the server is away, not a wait


@pytest.mark.timeout(120)
async def test_publishing_through_a_restart(private_dsn: tuple[str, PrivateServer]) -> None:
    dsn, server = private_dsn
    tally = Tally()
    stop = asyncio.Event()
    app = kanthorq.App(dsn, pool_size=PUBLISHERS)
    async with app:
        await app.publish("a.b", b"first")  # the stream exists
        tasks = [asyncio.create_task(publish_until(app, n, stop, tally)) for n in range(PUBLISHERS)]
        try:
            await wait_until(lambda: tally.ok() >= 200, timeout=30)
            await asyncio.to_thread(server.stop, "fast")
            down = len(tally.failed)
            await wait_until(lambda: len(tally.failed) >= down + 20, timeout=30)
            server.start()  # in this thread: the server lives as long as it
            back = tally.ok()
            await wait_until(lambda: tally.ok() >= back + 200, timeout=30)  # recovered
        finally:
            stop.set()
            await asyncio.gather(*tasks)
    raw = [
        f"{type(e).__name__}: {e}"
        for e, _ in tally.failed
        if not isinstance(e, kanthorq.KanthorQError)
    ]
    assert raw == []
    errors = [e for e, _ in tally.failed]
    assert all(isinstance(e, kanthorq.PublishError) for e in errors), errors
    assert all(e.__cause__ is not None for e in errors)
    assert all(isinstance(e.may_be_written, bool) for e in errors)
    refused = [e for e in errors if isinstance(e.__cause__, NO_CONNECTION)]
    assert refused, "no publish met the stopped server"
    assert not any(e.may_be_written for e in refused)
    unknown = sum(size for e, size in tally.failed if e.may_be_written)

    db = await asyncpg.connect(dsn)
    try:
        table = await stream_table(db)
        found = await db.fetchval(
            f"SELECT count(*) FROM {table} WHERE id = ANY($1)", tally.returned
        )
        stored = await db.fetchval(f"SELECT count(*) FROM {table}") - 1  # not the first
    finally:
        await db.close()
    assert found == len(tally.returned)  # every id returned exists
    # what failed as surely not written was not: only the unknown outcomes can add rows
    assert len(tally.returned) <= stored <= len(tally.returned) + unknown
