"""What production does to running tasks (issue 10, items 2-5, 11, 12): workers that disagree
about the visibility timeout, a worker paused inside its transaction, handlers that never
return, callers that hold the whole pool, transactions left open, errors without a message.
Each test fails on 0e98bdc."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable

import asyncpg
import pytest

import kanthorq
from kanthorq import app as app_module
from tests.conftest import age_running, task_table, wait_until

AppFactory = Callable[..., kanthorq.App]


async def polls(app: kanthorq.App, consumer: str, count: int = 2) -> None:
    """Wait until the process has polled ``count`` more times and ``consumer``'s worker has
    acted on what they found (a rescue pass, when a task was past its deadline)."""
    assert app.poller is not None
    target = app.poller.passes + count
    await wait_until(lambda: app.poller is not None and app.poller.passes >= target, timeout=20)
    await asyncio.sleep(0)  # the woken worker's step
    await wait_until(lambda: not app.workers[consumer]._rescue_due, timeout=20)


async def running_app(app: kanthorq.App) -> asyncio.Task[None]:
    task = asyncio.create_task(app.run())
    await wait_until(lambda: app.listener is not None and app.listener.connected.is_set())
    return task


async def stop(app: kanthorq.App, task: asyncio.Task[None], within: float = 30) -> None:
    await app.shutdown()
    await asyncio.wait_for(task, within)


async def test_workers_with_different_timeouts_agree_on_the_deadline(
    make_app: AppFactory, db: asyncpg.Connection
) -> None:
    """A rolling deploy lowers the timeout from 300 s to 5 s while the old worker keeps its
    tasks alive with msg.extend(30): the new worker must not rescue them."""
    runs: Counter[str] = Counter()
    release = asyncio.Event()
    old, new = make_app(poll_interval=0.2), make_app(poll_interval=0.2)

    @old.subscribe("job.>", consumer="jobs", visibility_timeout=300, concurrency=10)
    async def long_job(msg: kanthorq.Message) -> None:
        runs[msg.event.id] += 1
        assert await msg.extend(30)
        await release.wait()

    @new.subscribe("job.>", consumer="jobs", visibility_timeout=5, concurrency=10)
    async def quick_job(msg: kanthorq.Message) -> None:
        runs[msg.event.id] += 1

    old_task = await running_app(old)
    ids = await old.publish_many([("job.run", b"x")] * 10)
    await wait_until(lambda: len(runs) == 10)
    table = await task_table(db, "jobs")
    claimed_at = dict(await db.fetch(f"SELECT event_id, attempted_at FROM {table}"))
    new_task = await running_app(new)  # the registry says 5 s now
    await age_running(db, "jobs", 10_000)  # 10 s pass: past 5 s, inside the extension
    await polls(new, "jobs")
    rows = await db.fetch(f"SELECT event_id, state, attempt_count, attempted_at FROM {table}")
    assert {(r["state"], r["attempt_count"]) for r in rows} == {(2, 1)}
    # attempted_at still means the claim time (KanthorQ for Go reads it so)
    assert {r["event_id"]: r["attempted_at"] + 10_000 for r in rows} == claimed_at
    release.set()
    await wait_until(
        lambda: db.fetchval(f"SELECT count(*) = 10 FROM {table} WHERE state = 101"), timeout=10
    )
    assert runs == Counter(dict.fromkeys(ids, 1))  # no task ran twice
    await stop(new, new_task)
    await stop(old, old_task)


async def test_a_worker_paused_in_its_transaction_stalls_nobody(
    make_app: AppFactory, db: asyncpg.Connection
) -> None:
    """The exactly-once pattern, paused before COMMIT (SIGSTOP, a VM freeze): its row lock
    must hold up neither the other workers' loops (their rescue, and a conversion that meets
    the task again after a replay) nor their shutdown. (Its open transaction
    does hold back the conversion of events published after it began, by design: those
    here were converted before.)"""
    paused = make_app(poll_interval=0.2)
    claimed, aged, holding, resume = (asyncio.Event() for _ in range(4))
    handled: list[str] = []

    # its own timeout is long: a paused process runs no watchdog of its own
    @paused.subscribe("job.>", consumer="jobs", visibility_timeout=300, concurrency=1)
    async def frozen(msg: kanthorq.Message) -> None:
        if msg.event.subject != "job.first":
            handled.append(msg.event.id)
            return
        claimed.set()
        await aged.wait()
        async with paused.pool.acquire() as conn, conn.transaction():
            await msg.ack(conn=conn)  # the task's row is locked until COMMIT
            holding.set()
            await resume.wait()  # paused here

    async with paused:
        [first, *ids] = await paused.publish_many([("job.first", b"x")] + [("job.next", b"y")] * 20)
    paused_task = await running_app(paused)  # converts all 21, claims the first
    await wait_until(claimed.is_set)
    await age_running(db, "jobs", 400_000, first)  # long past its deadline
    aged.set()
    await wait_until(holding.is_set)
    # and a replay makes conversion meet the locked task again
    assert (await paused.admin.replay("jobs", event_id=first)).updated == 1

    healthy = make_app(poll_interval=0.2, shutdown_timeout=5)

    @healthy.subscribe("job.>", consumer="jobs", visibility_timeout=2, concurrency=10)
    async def work(msg: kanthorq.Message) -> None:
        handled.append(msg.event.id)

    healthy_task = await running_app(healthy)
    await wait_until(lambda: sorted(handled) == sorted(ids), timeout=20)
    await polls(healthy, "jobs")  # and its rescue passes go by the locked task
    loop = asyncio.get_running_loop()
    started = loop.time()
    await stop(healthy, healthy_task, within=15)
    assert loop.time() - started < 10  # not the 40 s of a rescue waiting on the lock
    resume.set()
    await stop(paused, paused_task)
    table = await task_table(db, "jobs")
    assert await db.fetchval(f"SELECT state FROM {table} WHERE event_id = $1", first) == 101


async def test_a_handler_that_never_returns_gives_its_slot_back(
    make_app: AppFactory, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """A poison task that hangs, with concurrency 4: its handlers are cancelled at their
    deadline; one that ignores the cancellation stops counting; the other events run."""
    caplog.set_level(logging.WARNING, logger="kanthorq")
    app = make_app(poll_interval=0.2)
    handled: list[str] = []
    never = asyncio.Event()

    @app.subscribe("job.>", consumer="jobs", visibility_timeout=1, concurrency=4, max_retries=1)
    async def handle(msg: kanthorq.Message) -> None:
        if msg.event.subject == "job.hang":
            await never.wait()
        elif msg.event.subject == "job.stubborn":
            while not never.is_set():  # swallows every cancellation until the test ends
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(0.05)
        handled.append(msg.event.id)

    task = await running_app(app)
    hang = await app.publish_many([("job.hang", b"")] * 3 + [("job.stubborn", b"")])
    ids = await app.publish_many([("job.fine", b"")] * 20)
    await wait_until(lambda: set(handled) >= set(ids), timeout=30)
    table = await task_table(db, "jobs")
    await wait_until(
        lambda: db.fetchval(
            f"SELECT count(*) = 3 FROM {table} WHERE state = -102 AND event_id = ANY($1)",
            hang[:3],
        ),
        timeout=30,
    )
    stuck = f"the handler of event {hang[3]} (attempt 1) ignored its cancellation"
    await wait_until(lambda: stuck in caplog.text, timeout=20)
    text = caplog.text
    for event_id in hang[:3]:
        assert f"the handler of event {event_id} (attempt 1) ran past its task's deadline" in text
    never.set()  # lets the stubborn handlers go at last
    await stop(app, task)


async def test_publishing_in_transactions_that_hold_the_whole_pool_to_a_new_stream(
    make_app: AppFactory,
) -> None:
    """4 concurrent requests, each publishing inside its own transaction, pool_size=4."""
    async with make_app(pool_size=4) as app:

        async def request(n: int) -> str:
            async with app.pool.acquire() as conn, conn.transaction():
                await asyncio.sleep(0.05)  # all four hold their connection now
                return await app.publish("order.created", {"n": n}, stream="brand_new", conn=conn)

        ids = await asyncio.wait_for(asyncio.gather(*(request(n) for n in range(4))), 20)
    assert len(set(ids)) == 4


async def test_conversion_held_back_by_an_open_transaction_is_logged_once(
    make_app: AppFactory, dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kanthorq")
    app = make_app(poll_interval=0.2)
    handled: list[str] = []

    @app.subscribe("job.>", consumer="jobs")
    async def handle(msg: kanthorq.Message) -> None:
        handled.append(msg.event.id)

    task = await running_app(app)
    blocker = await asyncpg.connect(dsn)
    try:
        async with blocker.transaction():
            await blocker.execute("SELECT pg_current_xact_id()")  # a write transaction, open
            pid = blocker.get_server_pid()
            await app.publish("job.waiting", b"x")
            await wait_until(lambda: "waited" in caplog.text, timeout=10)
            assert handled == []
            await polls(app, "jobs", 3)
        await wait_until(lambda: len(handled) == 1, timeout=10)
    finally:
        await blocker.close()
    [warning] = [r for r in caplog.records if "for an older transaction" in r.getMessage()]
    assert f"backend pid {pid}" in warning.getMessage()
    assert "its transaction open for" in warning.getMessage()
    assert "no longer held back" in caplog.text
    await stop(app, task)


async def test_a_database_error_without_a_message_is_logged_with_its_type(
    make_app: AppFactory,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A statement timeout logged "database error, retrying in 0.1s: " and nothing more."""
    caplog.set_level(logging.WARNING, logger="kanthorq")
    monkeypatch.setattr(app_module, "WORKER_STATEMENT_TIMEOUT", 0.2)
    app = make_app(poll_interval=0.2)

    @app.subscribe("job.>", consumer="jobs")
    async def handle(msg: kanthorq.Message) -> None: ...

    task = await running_app(app)
    table = await task_table(db, "jobs")
    async with db.transaction():
        await db.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")  # every read waits
        await app.publish("job.run", b"x")  # the worker wakes, and waits too
        await wait_until(lambda: "TimeoutError" in caplog.text, timeout=10)
    lines = [r.getMessage() for r in caplog.records if "TimeoutError" in r.getMessage()]
    assert lines
    assert all(line.rstrip().endswith("TimeoutError:") for line in lines)  # its empty message
    await stop(app, task)
