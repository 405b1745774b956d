"""Hosts whose clocks are wrong (issue 10, items 1 and 7): every time compared with stored
times comes from the database's clock. The wrong clocks are real: the processes run under
libfaketime, which moves their wall clock (and nothing else)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import asyncpg

import kanthorq
from tests.conftest import task_table, wait_until
from tests.reliability.conftest import (
    Workers,
    create_ledger,
    ledger_count,
    needs_faketime,
    publish_seq,
    skewed_clock,
)

pytestmark = needs_faketime


async def test_retention_on_a_fast_host_deletes_by_the_database_clock(
    dsn: str, db: asyncpg.Connection, workers: Workers
) -> None:
    """A worker 10 minutes fast, keeping tasks 120 s, deleted tasks 6 s after they finished."""
    await create_ledger(db)
    async with kanthorq.App(dsn) as app:
        await publish_seq(app, 50)
    worker = workers.spawn(
        dsn,
        clock="+10m",
        log_level="DEBUG",
        retain_tasks=120,
        retention_interval=0.3,
        poll=0.2,
    )
    await wait_until(lambda: _ledger_is(db, 50), timeout=30)  # every task has finished
    finished = _passes(worker.output(1_000_000))

    async def two_more_or_deleted() -> bool:
        assert worker.alive(), workers.logs()
        more = _passes(worker.output(1_000_000)) >= finished + 2
        return more or not await _completed(db, 50)

    await wait_until(two_more_or_deleted, timeout=30)  # two passes after they finished
    assert await _completed(db, 50), workers.logs()


async def _ledger_is(db: asyncpg.Connection, count: int) -> bool:
    return await ledger_count(db) == count


def _passes(log: str) -> int:
    return log.count("retention: pass ")


async def _completed(db: asyncpg.Connection, count: int) -> bool:
    table = await task_table(db, "jobs")
    return await db.fetchval(f"SELECT count(*) FROM {table} WHERE state = 101") == count


def run_cli(dsn: str, clock: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **skewed_clock(clock)}
    env.pop("KANTHORQ_DSN", None)
    return subprocess.run(
        [sys.executable, "-m", "kanthorq", *argv, "--dsn", dsn],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_prune_and_replay_ages_count_from_the_database_clock(
    dsn: str, db: asyncpg.Connection
) -> None:
    app = kanthorq.App(dsn, poll_interval=0.2)
    handled: list[str] = []

    @app.subscribe("job.>", consumer="jobs")
    async def handle(msg: kanthorq.Message) -> None:
        handled.append(msg.event.id)

    async with app:
        ids = await publish_seq(app, 20)
        runner = asyncio.create_task(app.run())
        await wait_until(lambda: len(handled) == 20, timeout=20)
        await wait_until(lambda: _completed(db, 20), timeout=10)
        await app.shutdown()
        await runner
    # the CLI on a host 10 minutes fast: "older than a minute" is not "everything"
    pruned = await asyncio.to_thread(
        run_cli, dsn, "+10m", "prune", "tasks", "--consumer", "jobs", "--before", "1m", "--json"
    )
    assert pruned.returncode == 0, pruned.stderr
    assert '"deleted": 0' in pruned.stdout, pruned.stdout
    assert await _completed(db, 20)
    # and there, "since 5 minutes ago" is not in the future: it covers these events
    replayed = await asyncio.to_thread(
        run_cli, dsn, "+10m", "replay", "jobs", "--since", "5m", "--json"
    )
    assert replayed.returncode == 0, replayed.stderr
    assert '"updated": 1' in replayed.stdout, replayed.stdout
    cursor = await db.fetchval("SELECT cursor FROM kanthorq_consumer_registry WHERE name = 'jobs'")
    assert cursor < min(ids)


PUBLISH = """
import asyncio, sys
import kanthorq

async def main():
    async with kanthorq.App(sys.argv[1]) as app:
        slow = await app.publish("job.delayed", {"seq": 0}, delay=300)
        soon = await app.publish("job.soon", {"seq": 1}, delay=1)
        print(slow, soon)

asyncio.run(main())
"""


async def test_a_delay_is_counted_from_the_database_clock(
    dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """A publisher 10 minutes slow ran delay=300 events at once; one 10 minutes fast delayed
    delay=1 events by 601 s."""
    script = tmp_path / "publish.py"
    script.write_text(textwrap.dedent(PUBLISH))
    app = kanthorq.App(dsn, poll_interval=0.2)
    ran: list[str] = []

    @app.subscribe("job.>", consumer="jobs")
    async def handle(msg: kanthorq.Message) -> None:
        ran.append(msg.event.subject)

    async with app:
        runner = asyncio.create_task(app.run())
        for clock in ("-10m", "+10m"):
            env = {**os.environ, **skewed_clock(clock)}
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, str(script), dsn],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0, done.stderr
        table = await task_table(db, "jobs")

        async def scheduled() -> list[asyncpg.Record] | None:
            rows = await db.fetch(
                f"SELECT subject, schedule_at - kanthorq_now_ms() AS due_in FROM {table} "
                "WHERE subject = 'job.delayed'"
            )
            return rows if len(rows) == 2 else None

        rows = await wait_until(scheduled, timeout=10)
        await wait_until(lambda: ran.count("job.soon") == 2, timeout=10)  # about 1 s, twice
        await app.shutdown()
        await runner
    assert "job.delayed" not in ran
    for row in rows:
        assert 290_000 <= row["due_in"] <= 300_000, row
