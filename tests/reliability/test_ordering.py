"""Item 7: 8 publishers whose transactions stay open 0-200 ms commit out of id order while
the workers convert; every consumer still gets exactly one task per matching event."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

import kanthorq
from tests.conftest import Running, stream_table, task_table, wait_until

Starter = Callable[..., Awaitable[Running]]
PUBLISHERS = 8
EVENTS = 10_000
SUBJECTS = ["job.a.x", "job.a.y", "job.b.x", "job.b.deep.z", "other.a"]
# consumer -> (include, exclude) and, written out by hand, the subjects it takes
CONSUMERS: dict[str, tuple[list[str], list[str], set[str]]] = {
    "every_job": (["job.>"], [], {"job.a.x", "job.a.y", "job.b.x", "job.b.deep.z"}),
    "a_only": (["job.a.*"], [], {"job.a.x", "job.a.y"}),
    "not_b": ([">"], ["job.b.>"], {"job.a.x", "job.a.y", "other.a"}),
}


class Publisher:
    """Publishes its share in transactions held open for a random 0-200 ms; one in twenty
    rolls back. Records what committed."""

    def __init__(self, app: kanthorq.App, number: int, share: int) -> None:
        self.app = app
        self.number = number
        self.share = share
        self.rng = random.Random(number)
        self.committed: dict[str, str] = {}  # event id -> subject
        self.seq = number * 1_000_000

    def _batch(self) -> list[tuple[str, dict[str, int]]]:
        size = self.rng.randint(1, 40)
        items = []
        for _ in range(size):
            self.seq += 1
            items.append((self.rng.choice(SUBJECTS), {"seq": self.seq}))
        return items

    async def run(self) -> None:
        published = 0
        while published < self.share:
            items = self._batch()[: self.share - published]
            rollback = self.rng.random() < 0.05
            hold = self.rng.uniform(0, 0.2)
            ids = await self._transaction(items, hold, rollback)
            if not rollback:
                published += len(items)
                self.committed.update(zip(ids, (s for s, _ in items), strict=True))

    async def _transaction(
        self, items: list[tuple[str, dict[str, int]]], hold: float, rollback: bool
    ) -> list[str]:
        ids: list[str] = []
        try:
            async with self.app.pool.acquire() as conn, conn.transaction():
                split = self.rng.randint(0, len(items))
                for subject, body in items[:split]:  # one by one, the ids made as we go
                    ids.append(await self.app.publish(subject, body, conn=conn))
                    await asyncio.sleep(hold / len(items))
                ids += await self.app.publish_many(items[split:], conn=conn)
                await asyncio.sleep(hold * (len(items) - split) / len(items))
                if rollback:
                    raise _RollBack
        except _RollBack:
            pass
        return ids


class _RollBack(Exception):
    pass


def expected_tasks(publishers: list[Publisher]) -> dict[str, set[str]]:
    """Consumer -> the committed events it takes."""
    committed: dict[str, str] = {}
    for publisher in publishers:
        committed.update(publisher.committed)
    assert len(committed) == EVENTS
    expected: dict[str, set[str]] = defaultdict(set)
    for event_id, subject in committed.items():
        for name, (_, _, takes) in CONSUMERS.items():
            if subject in takes:
                expected[name].add(event_id)
    return expected


@pytest.mark.timeout(180)
async def test_out_of_order_commits_skip_nothing(
    dsn: str, db: asyncpg.Connection, start_app: Starter
) -> None:
    runner = kanthorq.App(dsn, poll_interval=0.5)
    for name, (include, exclude, _) in CONSUMERS.items():

        async def handle(msg: kanthorq.Message) -> None:
            return None

        runner.subscribe(include, consumer=name, exclude=exclude, concurrency=100)(handle)
    await start_app(runner)

    publishing = kanthorq.App(dsn, pool_size=PUBLISHERS + 2)
    async with publishing:
        publishers = [Publisher(publishing, n, EVENTS // PUBLISHERS) for n in range(PUBLISHERS)]
        await asyncio.gather(*(p.run() for p in publishers))

    expected = expected_tasks(publishers)

    async def converted_and_done() -> bool:
        for name in CONSUMERS:
            table = await task_table(db, name)
            done = await db.fetchval(f"SELECT count(*) FROM {table} WHERE state = 101")
            if done < len(expected[name]):
                return False
        return True

    await wait_until(converted_and_done, timeout=120, interval=0.2)
    stream_events = await db.fetchval(f"SELECT count(*) FROM {await stream_table(db)}")
    assert stream_events == EVENTS  # the rolled-back transactions left no event
    for name in CONSUMERS:
        table = await task_table(db, name)
        rows = await db.fetch(f"SELECT event_id, state FROM {table}")
        got = [r["event_id"] for r in rows]
        assert len(got) == len(set(got))
        missing = expected[name] - set(got)
        extra = set(got) - expected[name]
        assert not missing, f"{name}: {len(missing)} events skipped"
        assert not extra, f"{name}: {len(extra)} tasks for events it does not take"
        assert {r["state"] for r in rows} == {101}
