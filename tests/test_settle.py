"""A handler that settles in its own transaction and then raises."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg

import kanthorq
from kanthorq.errors import StaleTask
from tests.conftest import Running, task_table, wait_until


async def test_raise_after_ack_in_rolled_back_transaction_retries(
    make_app: Callable[..., kanthorq.App],
    start_app: Callable[..., Awaitable[Running]],
    db: asyncpg.Connection,
) -> None:
    app = make_app()
    calls: list[int] = []

    @app.subscribe("a", consumer="c", max_retries=1, backoff=kanthorq.Fixed(delay=0.01))
    async def handler(msg: kanthorq.Message) -> None:
        calls.append(msg.task.attempt_count)
        async with app.pool.acquire() as conn, conn.transaction():
            assert await msg.ack(conn=conn)
            if msg.task.attempt_count == 1:
                raise RuntimeError("the business write failed after the ack")

    await start_app(app)
    event_id = await app.publish("a")
    await wait_until(lambda: calls == [1, 2])
    table = await task_table(db, "c")

    async def completed() -> bool:
        state = await db.fetchval(f"SELECT state FROM {table} WHERE event_id = $1", event_id)
        return state == kanthorq.TaskState.COMPLETED

    await wait_until(completed)
    errors = await db.fetchval(f"SELECT attempted_error FROM {table} WHERE event_id = $1", event_id)
    assert len(errors) == 1
    assert "the business write failed" in errors[0]


async def test_raise_after_committed_ack_keeps_it_completed(
    make_app: Callable[..., kanthorq.App],
    start_app: Callable[..., Awaitable[Running]],
    db: asyncpg.Connection,
) -> None:
    app = make_app()
    calls: list[int] = []

    @app.subscribe("a", consumer="c", max_retries=3, backoff=kanthorq.Fixed(delay=0.01))
    async def handler(msg: kanthorq.Message) -> None:
        calls.append(msg.task.attempt_count)
        async with app.pool.acquire() as conn, conn.transaction():
            await msg.ack(conn=conn)
        raise RuntimeError("after the commit")

    await start_app(app)
    event_id = await app.publish("a")
    await wait_until(lambda: calls == [1])
    table = await task_table(db, "c")

    async def completed() -> bool:
        row = await db.fetchrow(
            f"SELECT state, attempted_error FROM {table} WHERE event_id = $1", event_id
        )
        return row is not None and row["state"] == kanthorq.TaskState.COMPLETED

    await wait_until(completed)
    row = await db.fetchrow(f"SELECT attempt_count, attempted_error FROM {table}")
    assert row["attempt_count"] == 1
    assert row["attempted_error"] == []


async def test_stale_ack_in_the_callers_transaction_raises_and_rolls_back(
    make_app: Callable[..., kanthorq.App],
    start_app: Callable[..., Awaitable[Running]],
    db: asyncpg.Connection,
) -> None:
    app = make_app()
    await db.execute("CREATE TABLE side_effects (event_id TEXT)")
    claimed = asyncio.Event()
    go_on = asyncio.Event()
    raised: list[BaseException] = []

    @app.subscribe("a", consumer="c", max_retries=0)
    async def handler(msg: kanthorq.Message) -> None:
        claimed.set()
        await go_on.wait()
        try:
            async with app.pool.acquire() as conn, conn.transaction():
                await conn.execute("INSERT INTO side_effects VALUES ($1)", msg.event.id)
                await msg.ack(conn=conn)
        except StaleTask as exc:
            raised.append(exc)

    await start_app(app)
    await app.publish("a")
    await asyncio.wait_for(claimed.wait(), 10)
    table = await task_table(db, "c")
    # another attempt took the task meanwhile (as a rescue and a new claim would)
    await db.execute(f"UPDATE {table} SET attempt_count = attempt_count + 1")
    go_on.set()
    await wait_until(lambda: raised)
    assert "no longer running" in str(raised[0])
    assert await db.fetchval("SELECT count(*) FROM side_effects") == 0
    assert await db.fetchval(f"SELECT state FROM {table}") == kanthorq.TaskState.RUNNING
