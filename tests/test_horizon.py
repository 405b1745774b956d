"""Conversion waits only for running transactions that could still write to the stream."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg

import kanthorq
from kanthorq.testing.databases import fresh_database
from tests.conftest import Running, task_states, wait_until


async def test_open_transaction_in_another_database_does_not_hold_back_conversion(
    make_app: Callable[..., kanthorq.App],
    start_app: Callable[..., Awaitable[Running]],
    server_dsn: str,
    template_db: str,
) -> None:
    app = make_app(poll_interval=30)
    seen: list[str] = []

    @app.subscribe("a.>", consumer="c")
    async def handler(msg: kanthorq.Message) -> None:
        seen.append(msg.event.id)

    await start_app(app)
    async with fresh_database(server_dsn, template_db) as other_dsn:
        other = await asyncpg.connect(other_dsn)
        try:
            async with other.transaction():
                await other.fetchval("SELECT pg_current_xact_id()")  # holds an xid
                event_id = await app.publish("a.b", b"x")
                await wait_until(lambda: seen == [event_id], timeout=5)
        finally:
            await other.close()


async def test_open_transaction_in_the_same_database_holds_back_then_releases(
    make_app: Callable[..., kanthorq.App],
    start_app: Callable[..., Awaitable[Running]],
    db: asyncpg.Connection,
) -> None:
    app = make_app(poll_interval=30)
    seen: list[str] = []

    @app.subscribe("a.>", consumer="c")
    async def handler(msg: kanthorq.Message) -> None:
        seen.append(msg.event.id)

    await start_app(app)
    async with app:
        publisher = await asyncpg.connect(app.dsn)
        try:
            tx = publisher.transaction()
            await tx.start()
            # the slow transaction takes its id first, then publishes late
            await publisher.fetchval("SELECT pg_current_xact_id()")
            fast = await app.publish("a.fast", b"1")
            await asyncio.sleep(0.3)  # give the worker a chance to (wrongly) convert past it
            assert seen == []
            assert await task_states(db, "c") == {}
            slow = await app.publish("a.slow", b"2", conn=publisher)
            await tx.commit()
        finally:
            await publisher.close()
        await wait_until(lambda: sorted(seen) == sorted([fast, slow]), timeout=5)

    async def both_completed() -> bool:
        return await task_states(db, "c") == {kanthorq.TaskState.COMPLETED: 2}

    await wait_until(both_completed)
