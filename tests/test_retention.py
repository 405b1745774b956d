"""Retention applied by running workers: one at a time, under a lease."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import asyncpg
import pytest

import kanthorq
from kanthorq import TaskState
from kanthorq.errors import ConfigError
from kanthorq.lease import Lease
from kanthorq.retention import LEASE
from tests.conftest import Running, stream_table, task_table, wait_state, wait_until

AppFactory = Callable[..., kanthorq.App]
Starter = Callable[..., Awaitable[Running]]
DAY_MS = 86_400_000


async def test_running_workers_delete_old_events_and_prune_old_tasks(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app(retention_interval=0.2)
    app.retain(events=timedelta(hours=1), tasks=3600)

    @app.subscribe("a.>", consumer="c")
    async def handle(msg: kanthorq.Message) -> None:
        pass

    running = await start_app(app)
    old = await app.publish("a.old")
    fresh = await app.publish("a.fresh")
    await wait_state(db, "c", old, TaskState.COMPLETED)
    await wait_state(db, "c", fresh, TaskState.COMPLETED)
    events, tasks = await stream_table(db), await task_table(db, "c")
    await db.execute(f"UPDATE {events} SET created_at = created_at - {DAY_MS} WHERE id = $1", old)
    await db.execute(
        f"UPDATE {tasks} SET finalized_at = finalized_at - {DAY_MS} WHERE event_id = $1", old
    )

    async def pruned() -> bool:
        left = await db.fetchval(f"SELECT count(*) FROM {tasks}")
        return left == 1 and await db.fetchval(f"SELECT count(*) FROM {events}") == 1

    await wait_until(pruned, timeout=10)
    assert await db.fetchval(f"SELECT id FROM {events}") == fresh
    assert await db.fetchval(f"SELECT event_id FROM {tasks}") == fresh
    assert running.app.retention is not None
    assert running.app.retention.passes >= 1


async def test_only_one_worker_applies_retention_at_a_time(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection, dsn: str
) -> None:
    apps = []
    for _ in range(2):
        app = make_app(retention_interval=0.1)
        app.retain(events=60)

        @app.subscribe("a.>", consumer="c")
        async def handle(msg: kanthorq.Message) -> None:
            pass

        apps.append(app)
        await start_app(app)
    # another worker holds the lease: neither app makes a pass
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    assert pool is not None
    holder = Lease(pool, LEASE, ttl=3600)
    try:
        # (a runner may be making a pass right now: the lease is free between passes)
        await wait_until(holder.take)
        runners = [a.retention for a in apps]
        assert all(r is not None for r in runners)
        counts = [r.passes for r in runners if r is not None]
        for runner in runners:
            assert runner is not None
            assert await runner.run_once() is False
        assert [r.passes for r in runners if r is not None] == counts
        await holder.give_back()
    finally:
        await pool.close()
    await wait_until(lambda: sum(r.passes for r in runners if r is not None) > sum(counts))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "needs events=, tasks= or both"),
        ({"events": -1}, "events must be"),
        ({"tasks": "1d"}, "tasks must be"),
        ({"events": float("inf")}, "events must be"),
        ({"stream": "bad name", "events": 1}, "stream name"),
    ],
)
def test_retain_refuses_bad_settings(kwargs: dict[str, object], message: str) -> None:
    app = kanthorq.App("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises((ConfigError, kanthorq.errors.InvalidName), match=message):
        app.retain(**kwargs)  # type: ignore[arg-type]


def test_retention_interval_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="retention_interval"):
        kanthorq.App("postgresql://nobody@127.0.0.1:1/none", retention_interval=0)
