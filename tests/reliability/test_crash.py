"""Item 1: worker processes killed with SIGKILL in the middle of their handlers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

import kanthorq
from tests.conftest import task_table, wait_until
from tests.reliability.conftest import (
    Workers,
    age_running,
    audit,
    ledger_count,
    publish_seq,
)

EVENTS = 1000
VT_MS = 300_000
KNOBS = {"sleep_ms": 100, "concurrency": 5, "vt": VT_MS / 1000, "poll": 0.5}


async def stranded(db: asyncpg.Connection, killed_at: int, live: list[int]) -> list[str]:
    """Running tasks claimed before the kill that no live worker has started: the killed
    workers' in-flight tasks (a claim that died before its handler began has no start)."""
    table = await task_table(db, "jobs")
    rows = await db.fetch(
        f"""
        SELECT t.event_id FROM {table} t
        WHERE t.state = 2 AND t.attempted_at <= $1
          AND NOT EXISTS (SELECT 1 FROM started s WHERE s.event_id = t.event_id
                          AND s.attempt = t.attempt_count AND s.pid = ANY($2::INT[]))
        ORDER BY t.event_id
        """,
        killed_at,
        live,
    )
    return [r["event_id"] for r in rows]


async def live_before(db: asyncpg.Connection, killed_at: int, live: list[int]) -> int:
    """Running tasks claimed before the kill by a worker that is still alive."""
    table = await task_table(db, "jobs")
    value = await db.fetchval(
        f"""
        SELECT count(*) FROM {table} t JOIN started s
          ON s.event_id = t.event_id AND s.attempt = t.attempt_count
        WHERE t.state = 2 AND t.attempted_at <= $1 AND s.pid = ANY($2::INT[])
        """,
        killed_at,
        live,
    )
    return int(value)


@pytest.mark.timeout(120)
async def test_sigkill_mid_handler_loses_nothing(
    ledger_db: asyncpg.Connection, opened: kanthorq.App, workers: Workers, dsn: str
) -> None:
    db = ledger_db
    await publish_seq(opened, EVENTS)
    procs = [workers.spawn(dsn, **KNOBS) for _ in range(3)]

    async def progressed() -> bool:
        assert all(p.alive() for p in procs), workers.logs()
        return await ledger_count(db) >= EVENTS * 0.3

    await wait_until(progressed, timeout=60, interval=0.01)
    victims, survivor = procs[:2], procs[2]
    for victim in victims:
        victim.kill()
    killed_at = int(await db.fetchval("SELECT kanthorq_now_ms()"))
    assert await ledger_count(db) < EVENTS, "the workers finished before the kill"

    restarted = [workers.spawn(dsn, **KNOBS) for _ in victims]
    live = [survivor.pid, *(w.pid for w in restarted)]

    # the survivor finishes what it had claimed before the kill (100 ms handlers), the
    # tasks it claimed ahead of its free slots too (kanthorq/prefetch.py: it starts them as
    # slots free up, 50 a second here, so they leave the stranded set until it holds still);
    # what is left running from before the kill belongs to the dead workers
    await wait_until(lambda: _none_live(db, killed_at, live), timeout=30)
    lost_in_flight = await _settled(lambda: stranded(db, killed_at, live))
    assert lost_in_flight, "the killed workers had no task in flight: the kill missed"
    started_by_victims = await db.fetchval(
        "SELECT count(*) FROM started s WHERE s.pid = ANY($1::INT[]) AND NOT EXISTS "
        "(SELECT 1 FROM ledger l WHERE l.event_id = s.event_id AND l.attempt = s.attempt)",
        [v.pid for v in victims],
    )

    # time moves forward for those tasks only: they are past their visibility timeout now
    moved = await age_running(
        db, "jobs", "event_id = ANY($2::TEXT[])", VT_MS + 1000, lost_in_flight
    )
    assert moved == len(lost_in_flight)

    table = await task_table(db, "jobs")

    async def all_completed() -> bool:
        assert all(p.alive() for p in [survivor, *restarted]), workers.logs()
        return await db.fetchval(f"SELECT count(*) FROM {table} WHERE state = 101") == EVENTS

    await wait_until(all_completed, timeout=60, interval=0.05)

    result = await audit(db, "jobs")
    assert result.events == EVENTS
    assert result.tasks == EVENTS, result.states
    assert result.completed == EVENTS, result.states
    assert result.unconverted == []
    assert result.without_ledger == []
    assert result.ledger_duplicates == []  # exactly once inside the database
    assert await db.fetchval("SELECT count(DISTINCT seq) FROM ledger") == EVENTS
    duplicate_runs = result.runs - await db.fetchval("SELECT count(DISTINCT event_id) FROM started")
    assert duplicate_runs <= started_by_victims <= len(lost_in_flight), (
        duplicate_runs,
        started_by_victims,
        len(lost_in_flight),
    )
    # the rescued tasks ran again, on a live worker
    reruns = await db.fetch(
        "SELECT event_id, pid FROM ledger WHERE event_id = ANY($1::TEXT[])", lost_in_flight
    )
    assert len(reruns) == len(lost_in_flight)
    assert {r["pid"] for r in reruns} <= set(live)


async def _settled(read: Callable[[], Awaitable[list[str]]], still: float = 2.0) -> list[str]:
    """What ``read`` returns once it has not changed for ``still`` seconds (at most 60)."""
    loop = asyncio.get_running_loop()
    value, since, deadline = await read(), loop.time(), loop.time() + 60
    while loop.time() - since < still:
        assert loop.time() < deadline, "the stranded tasks never held still"
        await asyncio.sleep(0.1)
        now = await read()
        if now != value:
            value, since = now, loop.time()
    return value


async def _none_live(db: asyncpg.Connection, killed_at: int, live: list[int]) -> bool:
    return await live_before(db, killed_at, live) == 0
