"""Periodic events from three `kanthorq run` processes (issue 13): exactly one event per
tick, none missing, while one of them is killed with SIGKILL."""

from __future__ import annotations

import json

import asyncpg

import kanthorq
from kanthorq.periodic import TICK_KEY
from tests.conftest import stream_table, wait_until
from tests.reliability.conftest import Workers


async def ticks(db: asyncpg.Connection) -> list[int]:
    if not await db.fetchval("SELECT to_regclass('kanthorq_stream_registry') IS NOT NULL"):
        return []
    if not await db.fetchval("SELECT count(*) FROM kanthorq_stream_registry"):
        return []
    table = await stream_table(db)
    rows = await db.fetch(f"SELECT metadata FROM {table} WHERE subject = 'beat.tick'")
    return sorted(json.loads(r["metadata"])[TICK_KEY] for r in rows)


async def test_three_processes_publish_each_tick_once_through_a_kill(
    dsn: str, db: asyncpg.Connection, workers: Workers
) -> None:
    async with kanthorq.App(dsn):
        pass  # migrated
    procs = [workers.spawn(dsn, periodic_every=1, poll=0.5) for _ in range(3)]

    async def seen(count: int) -> bool:
        assert all(p.alive() for p in procs if p is not procs[0] or not killed), workers.logs()
        return len(await ticks(db)) >= count

    killed = False
    await wait_until(lambda: seen(4), timeout=30)
    procs[0].kill()  # SIGKILL, mid-run
    killed = True
    await wait_until(lambda: seen(11), timeout=30)
    published = await ticks(db)
    assert len(published) == len(set(published)), "a tick was published twice"
    assert published == list(range(published[0], published[-1] + 1000, 1000)), "a tick is missing"
    table = await stream_table(db)
    keys = await db.fetchval(
        f"SELECT count(DISTINCT dedup_key) FROM {table} WHERE subject = 'beat.tick'"
    )
    assert keys == len(published)
