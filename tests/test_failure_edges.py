"""Edges of failure handling: a broken backoff policy, a handler that ignores cancellation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

import kanthorq
from kanthorq import outcomes
from kanthorq import shutdown as shutdown_module
from kanthorq.errors import VisibilityTimeout
from tests.conftest import Running, age_running, task_table, wait_until


async def test_a_backoff_policy_that_raises_still_schedules_a_retry(
    make_app: Callable[..., kanthorq.App],
    start_app: Callable[..., Awaitable[Running]],
    db: asyncpg.Connection,
) -> None:
    app = make_app()

    def broken(attempt: int) -> float:
        raise ZeroDivisionError("policy bug")

    @app.subscribe("a", consumer="c", backoff=broken)
    async def handler(msg: kanthorq.Message) -> None:
        raise RuntimeError("handler failed")

    await start_app(app)
    before_ms = time.time() * 1000
    await app.publish("a")
    table = await task_table(db, "c")

    async def retryable() -> asyncpg.Record | None:
        return await db.fetchrow(f"SELECT * FROM {table} WHERE state = 102")

    row = await wait_until(retryable)
    # not stuck in running until the visibility timeout: retried after the fallback delay
    fallback_ms = outcomes.FALLBACK_DELAY * 1000
    assert row["schedule_at"] >= before_ms + fallback_ms - 1000
    assert row["attempt_count"] == 1


async def test_a_handler_that_ignores_cancellation_is_not_handed_back(
    make_app: Callable[..., kanthorq.App],
    db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shutdown_module, "CANCEL_GRACE", 0.3)
    app = make_app(shutdown_timeout=0.2)
    started = asyncio.Event()
    release = asyncio.Event()

    @app.subscribe("a", consumer="c")
    async def stubborn(msg: kanthorq.Message) -> None:
        started.set()
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # swallows the shutdown's cancellation

    run = asyncio.create_task(app.run())
    try:
        await wait_until(lambda: app.listener is not None and app.listener.connected.is_set())
        await app.publish("a")
        await asyncio.wait_for(started.wait(), 10)
        await app.shutdown()
        await asyncio.wait_for(asyncio.shield(run), 10)  # shutdown does not hang on it
        table = await task_table(db, "c")
        # still running (it is): not handed back for a second, concurrent run
        assert await db.fetchval(f"SELECT state FROM {table}") == kanthorq.TaskState.RUNNING
    finally:
        release.set()
        await asyncio.gather(run, return_exceptions=True)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("a NUL \x00 in the message"),
        ValueError("a lone surrogate \udc80 in the message"),
        asyncio.CancelledError("the handler's own code cancelled something"),
    ],
    ids=["nul", "surrogate", "cancelled"],
)
async def test_any_handler_error_is_recorded_and_retried(
    make_app: Callable[..., kanthorq.App],
    start_app: Callable[..., Awaitable[Running]],
    db: asyncpg.Connection,
    error: BaseException,
) -> None:
    app = make_app()

    @app.subscribe("a", consumer="c", max_retries=1, backoff=kanthorq.Fixed(delay=0.01))
    async def handler(msg: kanthorq.Message) -> None:
        raise error

    await start_app(app)
    await app.publish("a")
    table = await task_table(db, "c")

    async def discarded() -> asyncpg.Record | None:
        return await db.fetchrow(f"SELECT * FROM {table} WHERE state = -102")

    row = await wait_until(discarded)
    assert row["attempt_count"] == 2
    assert len(row["attempted_error"]) == 2
    assert type(error).__name__ in row["attempted_error"][0]


async def test_nack_with_a_nul_in_its_reason_is_recorded(
    make_app: Callable[..., kanthorq.App],
    start_app: Callable[..., Awaitable[Running]],
    db: asyncpg.Connection,
) -> None:
    app = make_app()
    results: list[bool] = []

    @app.subscribe("a", consumer="c", max_retries=0)
    async def handler(msg: kanthorq.Message) -> None:
        results.append(await msg.nack("bad \x00 reason"))

    await start_app(app)
    await app.publish("a")
    await wait_until(lambda: results)
    assert results == [True]
    table = await task_table(db, "c")
    assert await db.fetchval(f"SELECT state FROM {table}") == kanthorq.TaskState.DISCARDED


async def test_a_big_backlog_neither_delays_claims_nor_shutdown(
    make_app: Callable[..., kanthorq.App],
    db: asyncpg.Connection,
) -> None:
    total = 20_000
    app = make_app(shutdown_timeout=1)
    async with app:
        for _ in range(total // 2_000):
            await app.publish_many([("a", b"") for _ in range(2_000)])
    tasks_when_first_handled: list[int] = []

    @app.subscribe("a", consumer="c", concurrency=1)
    async def handler(msg: kanthorq.Message) -> None:
        if not tasks_when_first_handled:
            table = await task_table(db, "c")
            tasks_when_first_handled.append(await db.fetchval(f"SELECT count(*) FROM {table}"))

    loop = asyncio.get_running_loop()
    run = asyncio.create_task(app.run())
    try:
        await wait_until(lambda: tasks_when_first_handled)
    finally:
        started = loop.time()
        await app.shutdown()
        await asyncio.wait_for(run, 10)
    # the first handler ran after a batch or two of conversion, not after the whole backlog
    assert tasks_when_first_handled[0] < total // 2
    assert loop.time() - started < 5


async def test_a_rescue_that_discards_calls_on_discard(
    make_app: Callable[..., kanthorq.App],
    start_app: Callable[..., Awaitable[Running]],
    db: asyncpg.Connection,
) -> None:
    app = make_app()
    gate = asyncio.Event()
    discarded: list[tuple[str, int, BaseException]] = []

    async def hook(msg: kanthorq.Message, error: BaseException) -> None:
        discarded.append((msg.event.id, msg.task.attempt_count, error))

    @app.subscribe("a", consumer="c", max_retries=0, visibility_timeout=30, on_discard=hook)
    async def handler(msg: kanthorq.Message) -> None:
        await gate.wait()

    await start_app(app)
    try:
        event_id = await app.publish("a", b"body")
        table = await task_table(db, "c")

        async def running() -> bool:
            return await db.fetchval(f"SELECT state FROM {table}") == kanthorq.TaskState.RUNNING

        await wait_until(running)
        await age_running(db, "c", 60_000)
        await wait_until(lambda: discarded)
        [(seen_id, attempt, error)] = discarded
        assert (seen_id, attempt) == (event_id, 1)
        assert isinstance(error, VisibilityTimeout)
    finally:
        gate.set()


async def test_a_dropped_consumer_is_reported_once_and_the_worker_stays_calm(
    make_app: Callable[..., kanthorq.App],
    start_app: Callable[..., Awaitable[Running]],
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app(poll_interval=0.05)

    @app.subscribe("a", consumer="c")
    async def handler(msg: kanthorq.Message) -> None: ...

    running = await start_app(app)
    await db.execute("DELETE FROM kanthorq_consumer_registry WHERE name = 'c'")
    for _ in range(5):
        await app.publish("a")
    await wait_until(lambda: "no longer registered" in caplog.text, timeout=5)
    await asyncio.sleep(0.3)  # several polls later: still one report, and run() lives on
    assert caplog.text.count("no longer registered") == 1
    assert running.task is not None
    assert not running.task.done()


async def test_database_errors_back_off_even_with_a_fast_poll(
    make_app: Callable[..., kanthorq.App],
    start_app: Callable[..., Awaitable[Running]],
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app(poll_interval=0.02)

    @app.subscribe("a", consumer="c")
    async def handler(msg: kanthorq.Message) -> None: ...

    await start_app(app)
    table = await task_table(db, "c")
    await db.execute(f"DROP TABLE {table}")  # every poll (and every step) now fails
    await app.publish("a", b"x")  # the worker steps, and fails too
    await wait_until(lambda: "database error" in caplog.text and "poll failed" in caplog.text)
    await asyncio.sleep(1.0)  # about 50 polls: the backoff (0.1, 0.2, 0.4, 0.8 s) spaces them
    assert 2 <= caplog.text.count("poll failed") <= 8
    assert 1 <= caplog.text.count("database error") <= 8
