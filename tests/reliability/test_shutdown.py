"""Item 3: SIGTERM while handlers run: short ones finish, long ones are handed back."""

from __future__ import annotations

import json
import signal
import time

import asyncpg
import pytest

import kanthorq
from tests.conftest import task_table, wait_until
from tests.reliability.conftest import Workers, ledger_count

GRACE = 2.0
SHORT, LONG, EXTRA = 5, 3, 10


@pytest.mark.timeout(120)
async def test_sigterm_finishes_short_handlers_and_hands_back_long_ones(
    ledger_db: asyncpg.Connection, opened: kanthorq.App, workers: Workers, dsn: str
) -> None:
    db = ledger_db
    short = [await opened.publish("job.short", {"seq": n, "sleep_ms": 700}) for n in range(SHORT)]
    long = [await opened.publish("job.long", {"seq": 100 + n, "long": True}) for n in range(LONG)]
    first = workers.spawn(dsn, concurrency=SHORT + LONG, long_ms=600_000, shutdown=GRACE, poll=0.2)

    async def all_started() -> bool:
        assert first.alive(), workers.logs()
        return await db.fetchval("SELECT count(*) FROM started") == SHORT + LONG

    await wait_until(all_started, timeout=60)
    # more work waits, which the stopping worker must not claim when its short handlers end
    extra = [await opened.publish("job.extra", {"seq": 200 + n}) for n in range(EXTRA)]
    table = await task_table(db, "jobs")
    await wait_until(
        lambda: _count(db, f"SELECT count(*) FROM {table} WHERE state = 1", EXTRA), timeout=10
    )

    signalled = time.monotonic()
    first.signal(signal.SIGTERM)
    await wait_until(lambda: not first.alive(), timeout=GRACE + 10, interval=0.01)
    took = time.monotonic() - signalled
    assert first.proc.returncode == 0, workers.logs()
    assert took <= GRACE + 1.0, (took, workers.logs())

    # the short handlers finished; nothing was claimed after the signal
    done = await db.fetch("SELECT event_id FROM ledger")
    assert sorted(r["event_id"] for r in done) == sorted(short)
    assert await db.fetchval("SELECT count(*) FROM started") == SHORT + LONG
    extra_rows = await db.fetch(
        f"SELECT state, attempt_count FROM {table} WHERE event_id = ANY($1::TEXT[])", extra
    )
    assert [tuple(r) for r in extra_rows] == [(1, 0)] * EXTRA

    # the long ones are retryable now, their interrupted attempt not counted
    handed = await db.fetch(f"SELECT * FROM {table} WHERE event_id = ANY($1::TEXT[])", long)
    now = await db.fetchval("SELECT kanthorq_now_ms()")
    for row in handed:
        assert row["state"] == 102, dict(row)
        assert row["attempt_count"] == 0
        assert row["schedule_at"] <= now
        assert "interrupted by a worker shutdown" in json.loads(row["attempted_error"][-1])["error"]

    # another worker takes them at once, long before the 300 s visibility timeout
    second = workers.spawn(dsn, concurrency=SHORT + LONG, poll=0.2)

    async def all_done() -> bool:
        assert second.alive(), workers.logs()
        return await ledger_count(db) == SHORT + LONG + EXTRA

    await wait_until(all_done, timeout=20)
    reruns = await db.fetch(
        "SELECT attempt, pid FROM ledger WHERE event_id = ANY($1::TEXT[])", long
    )
    assert {(r["attempt"], r["pid"]) for r in reruns} == {(1, second.pid)}


async def _count(db: asyncpg.Connection, sql: str, want: int) -> bool:
    return await db.fetchval(sql) == want
