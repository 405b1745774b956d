"""Leases: one holder at a time, taken and given back by autocommit statements; an expired
lease is taken over, and its old holder finds out when it renews."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from kanthorq.lease import Lease
from tests.conftest import wait_until


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    made = await asyncpg.create_pool(dsn, min_size=1, max_size=8)
    assert made is not None
    try:
        yield made
    finally:
        await made.close()


async def expire(db: asyncpg.Connection, name: str) -> None:
    """Move time forward for the lease: it expired a while ago."""
    await db.execute(
        "UPDATE kanthorq_lease SET expires_at = kanthorq_now_ms() - 1000 WHERE name = $1", name
    )


async def test_one_holder_at_a_time(pool: asyncpg.Pool) -> None:
    first, second = Lease(pool, "job", ttl=60), Lease(pool, "job", ttl=60)
    other = Lease(pool, "another job", ttl=60)
    assert await first.take() is True
    assert await second.take() is False
    assert await first.take() is True  # its own: taken again (renewed)
    assert await other.take() is True  # leases of other names are independent
    await first.give_back()
    assert await second.take() is True
    assert await first.take() is False


async def test_of_many_concurrent_takers_one_gets_it(pool: asyncpg.Pool) -> None:
    leases = [Lease(pool, "job", ttl=60) for _ in range(8)]
    taken = await asyncio.gather(*(lease.take() for lease in leases))
    assert sorted(taken) == [False] * 7 + [True]


async def test_an_expired_lease_is_taken_over_and_its_holder_cannot_renew_it(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    old, new = Lease(pool, "job", ttl=60), Lease(pool, "job", ttl=60)
    assert await old.take() is True
    assert await old.renew() is True
    await expire(db, "job")
    assert await new.take() is True
    assert await old.renew() is False
    await old.give_back()  # gives back only its own
    assert await db.fetchval("SELECT holder FROM kanthorq_lease WHERE name = 'job'") == new.holder


async def test_work_stops_when_its_lease_is_taken_over(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    lease = Lease(pool, "job", ttl=0.3)  # renewed every 0.1 s
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def work() -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # runs until cancelled
        except asyncio.CancelledError:
            cancelled.set()
            raise

    assert await lease.take() is True
    held = asyncio.create_task(lease.hold_while(work()))
    await asyncio.wait_for(started.wait(), 5)
    await expire(db, "job")
    assert await Lease(pool, "job", ttl=60).take() is True
    assert await asyncio.wait_for(held, 5) is False
    assert cancelled.is_set()


async def test_finished_work_gives_the_lease_back(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    lease = Lease(pool, "job", ttl=0.3)
    assert await lease.take() is True
    done: list[int] = []

    async def work() -> None:
        for n in range(3):
            await wait_until(lambda: True)
            done.append(n)

    assert await lease.hold_while(work()) is True
    assert done == [0, 1, 2]
    assert await db.fetchval("SELECT count(*) FROM kanthorq_lease") == 0
