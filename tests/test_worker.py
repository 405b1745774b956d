"""Worker behaviour against the real database: outcomes, retries, explicit acks, filters,
re-registration and in-process graceful shutdown."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import msgspec

import kanthorq
from kanthorq import TaskState
from kanthorq.errors import UndecodableBody
from tests.conftest import (
    Running,
    age_running,
    stream_table,
    task_row,
    task_states,
    task_table,
    wait_state,
    wait_until,
)

AppFactory = Callable[..., kanthorq.App]
Starter = Callable[..., Awaitable[Running]]


class Order(msgspec.Struct):
    id: int
    note: str


def errors_of(row: asyncpg.Record) -> list[dict[str, Any]]:
    return [json.loads(item) for item in row["attempted_error"]]


# ---- outcomes -----------------------------------------------------------------------


async def test_handler_return_completes_the_task(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app(poll_interval=30)
    received: list[kanthorq.Message] = []

    @app.subscribe("order.created", consumer="email")
    async def email(msg: kanthorq.Message) -> None:
        received.append(msg)

    await start_app(app)
    before = int(time.time() * 1000)
    event_id = await app.publish("order.created", {"id": 7}, metadata={"trace": "t1"})
    row = await wait_state(db, "email", event_id, TaskState.COMPLETED)

    assert row["attempt_count"] == 1
    assert row["finalized_at"] >= before
    assert row["attempted_error"] == []
    assert len(received) == 1
    msg = received[0]
    assert msg.event.id == event_id
    assert msg.event.subject == "order.created"
    assert msg.json() == {"id": 7}
    assert msg.event.metadata == {"trace": "t1"}
    assert msg.task.state == TaskState.RUNNING
    assert msg.task.attempt_count == 1


async def test_failures_retry_with_backoff_then_discard_after_max_retries(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app(poll_interval=30)
    calls: list[int] = []
    discarded: list[tuple[kanthorq.Message, BaseException]] = []

    async def on_discard(msg: kanthorq.Message, exc: BaseException) -> None:
        discarded.append((msg, exc))

    @app.subscribe(
        "job.run",
        consumer="jobs",
        max_retries=3,
        backoff=kanthorq.Fixed(delay=0.05),
        on_discard=on_discard,
    )
    async def jobs(msg: kanthorq.Message) -> None:
        calls.append(msg.task.attempt_count)
        raise ValueError(f"boom {msg.task.attempt_count}")

    await start_app(app)
    event_id = await app.publish("job.run", b"{}")
    row = await wait_state(db, "jobs", event_id, TaskState.DISCARDED)

    assert calls == [1, 2, 3, 4]  # max_retries=3: exactly four attempts
    assert row["attempt_count"] == 4
    assert row["finalized_at"] > 0
    errors = errors_of(row)
    assert [e["error"] for e in errors] == [f"ValueError: boom {n}" for n in (1, 2, 3, 4)]
    for error in errors:
        assert error["at"] > 0
        assert "Traceback" in error["traceback"]
        assert "boom" in error["traceback"]
    # each retry waited for the backoff before the next claim
    attempts_at = [e["at"] for e in errors]
    assert attempts_at == sorted(attempts_at)
    assert all(b - a >= 45 for a, b in itertools.pairwise(attempts_at))

    await wait_until(lambda: len(discarded) == 1)
    msg, exc = discarded[0]
    assert msg.event.id == event_id
    assert isinstance(exc, ValueError)
    assert str(exc) == "boom 4"
    assert calls == [1, 2, 3, 4]
    assert len(discarded) == 1


async def test_retryable_task_waits_for_the_consumer_backoff(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app()
    calls: list[int] = []

    @app.subscribe("job.run", consumer="jobs", max_retries=2, backoff=kanthorq.Fixed(delay=30))
    async def jobs(msg: kanthorq.Message) -> None:
        calls.append(msg.task.attempt_count)
        if msg.task.attempt_count == 1:
            raise RuntimeError("first attempt fails")

    await start_app(app)
    event_id = await app.publish("job.run")
    row = await wait_state(db, "jobs", event_id, TaskState.RETRYABLE)
    [error] = errors_of(row)
    assert error["error"] == "RuntimeError: first attempt fails"
    assert 29_900 <= row["schedule_at"] - error["at"] <= 32_000
    assert row["schedule_at"] > await db.fetchval("SELECT kanthorq_now_ms()")
    assert row["finalized_at"] == 0
    assert calls == [1]

    # move time forward: the task is due now, and the next poll claims it
    table = await task_table(db, "jobs")
    await db.execute(
        f"UPDATE {table} SET schedule_at = kanthorq_now_ms() WHERE event_id = $1", event_id
    )
    row = await wait_state(db, "jobs", event_id, TaskState.COMPLETED)
    assert row["attempt_count"] == 2
    assert calls == [1, 2]


async def test_callable_backoff_gets_the_attempt_number(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app(poll_interval=30)
    asked: list[int] = []

    def backoff(attempt: int) -> float:
        asked.append(attempt)
        return 0.02 if attempt == 1 else 40.0

    @app.subscribe("job.run", consumer="jobs", max_retries=5, backoff=backoff)
    async def jobs(msg: kanthorq.Message) -> None:
        raise RuntimeError("always")

    await start_app(app)
    event_id = await app.publish("job.run")

    async def second_failure() -> asyncpg.Record | None:
        row = await task_row(db, "jobs", event_id)
        return row if row is not None and len(row["attempted_error"]) == 2 else None

    row = await wait_until(second_failure)
    assert row["state"] == TaskState.RETRYABLE
    assert asked == [1, 2]
    assert 39_900 <= row["schedule_at"] - errors_of(row)[-1]["at"] <= 42_000


async def test_retry_exception_sets_the_next_attempt_time(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app(poll_interval=30)
    calls: list[float] = []

    # the consumer's own backoff is long: Retry(delay=...) must win over it
    @app.subscribe("job.run", consumer="jobs", max_retries=3, backoff=kanthorq.Fixed(delay=60))
    async def jobs(msg: kanthorq.Message) -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise kanthorq.Retry(delay=0.4)

    await start_app(app)
    event_id = await app.publish("job.run")
    row = await wait_state(db, "jobs", event_id, TaskState.COMPLETED, timeout=5)
    assert row["attempt_count"] == 2
    [error] = errors_of(row)
    assert error["error"].startswith("Retry")
    waited = row["attempted_at"] - error["at"]
    assert 380 <= waited <= 1500, waited
    assert 0.35 <= calls[1] - calls[0] <= 1.6


async def test_discard_exception_discards_at_once(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app(poll_interval=30)
    calls: list[int] = []
    discarded: list[tuple[str, BaseException]] = []

    async def on_discard(msg: kanthorq.Message, exc: BaseException) -> None:
        discarded.append((msg.event.id, exc))

    @app.subscribe(
        "job.run",
        consumer="jobs",
        max_retries=5,
        backoff=kanthorq.Fixed(delay=0.01),
        on_discard=on_discard,
    )
    async def jobs(msg: kanthorq.Message) -> None:
        calls.append(msg.task.attempt_count)
        raise kanthorq.Discard("poison message")

    await start_app(app)
    event_id = await app.publish("job.run")
    row = await wait_state(db, "jobs", event_id, TaskState.DISCARDED)
    assert calls == [1]
    assert row["attempt_count"] == 1
    assert row["finalized_at"] > 0
    [error] = errors_of(row)
    assert error["error"] == "Discard: poison message"
    await wait_until(lambda: len(discarded) == 1)
    assert discarded[0][0] == event_id
    assert isinstance(discarded[0][1], kanthorq.Discard)


# ---- typed handlers -------------------------------------------------------------------


async def test_struct_annotated_handler_receives_the_decoded_body(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app(poll_interval=30)
    received: list[Order] = []

    @app.subscribe("order.created", consumer="orders")
    async def orders(order: Order) -> None:
        received.append(order)

    await start_app(app)
    event_id = await app.publish("order.created", Order(id=42, note="rush"))
    await wait_state(db, "orders", event_id, TaskState.COMPLETED)
    assert received == [Order(id=42, note="rush")]


async def test_body_that_fails_to_decode_is_discarded_at_once(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app(poll_interval=30)
    received: list[Order] = []
    discarded: list[BaseException] = []

    async def on_discard(msg: kanthorq.Message, exc: BaseException) -> None:
        discarded.append(exc)

    @app.subscribe(
        "order.created",
        consumer="orders",
        max_retries=2,
        backoff=kanthorq.Fixed(delay=0.02),
        on_discard=on_discard,
    )
    async def orders(order: Order) -> None:
        received.append(order)

    await start_app(app)
    not_json = await app.publish("order.created", b"{not json")
    wrong_shape = await app.publish("order.created", {"id": "x"})
    good = await app.publish("order.created", {"id": 1, "note": "ok"})

    for event_id in (not_json, wrong_shape):
        row = await wait_state(db, "orders", event_id, TaskState.DISCARDED)
        assert row["attempt_count"] == 1  # it would never decode: no retry, whatever the budget
        [error] = errors_of(row)
        assert error["error"].startswith("UndecodableBody: the body does not decode into Order")
    await wait_state(db, "orders", good, TaskState.COMPLETED)
    assert received == [Order(id=1, note="ok")]
    await wait_until(lambda: len(discarded) == 2)
    assert all(isinstance(exc, UndecodableBody) for exc in discarded)
    assert all(isinstance(exc.__cause__, msgspec.DecodeError) for exc in discarded)


# ---- explicit acknowledgement -----------------------------------------------------------


async def test_ack_twice(make_app: AppFactory, start_app: Starter, db: asyncpg.Connection) -> None:
    app = make_app(poll_interval=30)
    results: list[bool] = []

    @app.subscribe("a.b", consumer="c")
    async def handler(msg: kanthorq.Message) -> None:
        results.append(await msg.ack())
        results.append(await msg.ack())
        results.append(await msg.nack("too late"))
        results.append(await msg.cancel())

    await start_app(app)
    event_id = await app.publish("a.b")
    row = await wait_state(db, "c", event_id, TaskState.COMPLETED)
    await wait_until(lambda: len(results) == 4)
    assert results == [True, False, False, False]
    assert row["attempt_count"] == 1
    assert row["attempted_error"] == []


async def test_nack_twice(make_app: AppFactory, start_app: Starter, db: asyncpg.Connection) -> None:
    app = make_app(poll_interval=30)
    results: list[bool] = []

    @app.subscribe("a.b", consumer="c", max_retries=3, backoff=kanthorq.Fixed(delay=60))
    async def handler(msg: kanthorq.Message) -> None:
        results.append(await msg.nack("not now"))
        results.append(await msg.nack("again"))
        results.append(await msg.ack())
        # returning normally after a nack must not complete the task

    await start_app(app)
    event_id = await app.publish("a.b")
    row = await wait_state(db, "c", event_id, TaskState.RETRYABLE)
    await wait_until(lambda: len(results) == 3)
    assert results == [True, False, False]
    # a later event's completion has flushed: a wrong completion of ours would have too
    sentinel = await app.publish("a.b")
    await wait_state(db, "c", sentinel, TaskState.RETRYABLE)
    row = await task_row(db, "c", event_id)
    assert row is not None
    assert row["state"] == TaskState.RETRYABLE
    assert row["attempt_count"] == 1
    [error] = errors_of(row)
    assert "not now" in error["error"]
    assert row["schedule_at"] - error["at"] >= 59_000


async def test_nack_on_last_attempt_discards(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app(poll_interval=30)
    discarded: list[str] = []

    async def on_discard(msg: kanthorq.Message, exc: BaseException) -> None:
        discarded.append(msg.event.id)

    @app.subscribe("a.b", consumer="c", max_retries=0, on_discard=on_discard)
    async def handler(msg: kanthorq.Message) -> None:
        await msg.nack("no")

    await start_app(app)
    event_id = await app.publish("a.b")
    row = await wait_state(db, "c", event_id, TaskState.DISCARDED)
    assert row["attempt_count"] == 1
    await wait_until(lambda: discarded == [event_id])


async def test_cancel_twice(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app(poll_interval=30)
    results: list[tuple[str, bool]] = []

    @app.subscribe("a.b", consumer="c", max_retries=3, backoff=kanthorq.Fixed(delay=0.01))
    async def handler(msg: kanthorq.Message) -> None:
        results.append((msg.event.id, await msg.cancel()))
        results.append((msg.event.id, await msg.cancel()))
        raise RuntimeError("raising after a cancel changes nothing")

    await start_app(app)
    event_id = await app.publish("a.b")
    await wait_state(db, "c", event_id, TaskState.CANCELLED)
    # a later task settles: a retry of ours (due in 10 ms) would have run by then
    sentinel = await app.publish("a.b")
    await wait_state(db, "c", sentinel, TaskState.CANCELLED)
    await wait_until(lambda: len(results) == 4)
    assert results == [(event_id, True), (event_id, False), (sentinel, True), (sentinel, False)]
    row = await task_row(db, "c", event_id)
    assert row is not None
    assert row["state"] == TaskState.CANCELLED
    assert row["attempt_count"] == 1
    assert row["finalized_at"] > 0
    assert row["attempted_error"] == []


async def test_ack_in_the_callers_transaction_commits_with_the_business_write(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    await db.execute("CREATE TABLE business (event_id TEXT PRIMARY KEY)")
    app = make_app(poll_interval=30)
    results: list[bool] = []

    @app.subscribe("a.b", consumer="c")
    async def handler(msg: kanthorq.Message) -> None:
        async with app.pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO business VALUES ($1)", msg.event.id)
            results.append(await msg.ack(conn=conn))
            results.append(await msg.ack(conn=conn))

    await start_app(app)
    event_id = await app.publish("a.b")
    row = await wait_state(db, "c", event_id, TaskState.COMPLETED)
    assert results == [True, False]
    assert row["attempt_count"] == 1
    assert await db.fetchval("SELECT count(*) FROM business WHERE event_id = $1", event_id) == 1


async def test_ack_in_a_rolled_back_transaction_leaves_the_task_running_until_rescued(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    await db.execute("CREATE TABLE business (event_id TEXT PRIMARY KEY)")
    app = make_app()  # its poll rescues the task
    attempts: list[int] = []
    returned: list[str] = []

    @app.subscribe("a.b", consumer="c", concurrency=1, visibility_timeout=30)
    async def handler(msg: kanthorq.Message) -> None:
        attempts.append(msg.task.attempt_count)
        async with app.pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            await conn.execute("INSERT INTO business VALUES ($1)", msg.event.id)
            assert await msg.ack(conn=conn)
            if msg.event.body == b"first" and msg.task.attempt_count == 1:
                await tx.rollback()
            else:
                await tx.commit()
        returned.append(msg.event.id)

    await start_app(app)
    event_id = await app.publish("a.b", b"first")
    await wait_until(lambda: returned == [event_id])
    # a later task completes: any completion of ours queued meanwhile has flushed too
    sentinel = await app.publish("a.b", b"sentinel")
    await wait_state(db, "c", sentinel, TaskState.COMPLETED)
    row = await task_row(db, "c", event_id)
    assert row is not None
    assert row["state"] == TaskState.RUNNING
    assert row["attempt_count"] == 1
    assert await db.fetchval("SELECT count(*) FROM business WHERE event_id = $1", event_id) == 0

    # past the visibility timeout, the task is rescued and run again
    await age_running(db, "c", 60_000, event_id)
    row = await wait_state(db, "c", event_id, TaskState.COMPLETED)
    assert row["attempt_count"] == 2
    assert attempts == [1, 1, 2]  # ours, the sentinel's, ours again
    assert await db.fetchval("SELECT count(*) FROM business WHERE event_id = $1", event_id) == 1


async def test_nack_in_the_callers_transaction(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app(poll_interval=30)

    @app.subscribe("a.b", consumer="c", backoff=kanthorq.Fixed(delay=60))
    async def handler(msg: kanthorq.Message) -> None:
        async with app.pool.acquire() as conn, conn.transaction():
            assert await msg.nack("in tx", conn=conn)

    await start_app(app)
    event_id = await app.publish("a.b")
    row = await wait_state(db, "c", event_id, TaskState.RETRYABLE)
    assert "in tx" in errors_of(row)[0]["error"]


async def test_settling_while_holding_every_pool_connection_does_not_deadlock(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    """Handlers hold all of app.pool's connections while they await ack, nack or cancel:
    the worker's own statements must not need those connections."""
    app = make_app(pool_size=2, poll_interval=30)
    results: dict[str, bool] = {}

    @app.subscribe("a.*", consumer="c", concurrency=6, backoff=kanthorq.Fixed(delay=60))
    async def handler(msg: kanthorq.Message) -> None:
        async with app.pool.acquire() as conn:
            await conn.execute("SELECT 1")
            action = msg.event.subject.split(".")[1]
            if action == "ack":
                results[msg.event.id] = await msg.ack()
            elif action == "nack":
                results[msg.event.id] = await msg.nack("no")
            else:
                results[msg.event.id] = await msg.cancel()

    await start_app(app)
    ids = await app.publish_many([(f"a.{a}", b"") for a in ("ack", "nack", "cancel") * 4])
    await wait_until(lambda: len(results) == len(ids), timeout=10)
    assert all(results.values())
    expected = {TaskState.COMPLETED: 4, TaskState.RETRYABLE: 4, TaskState.CANCELLED: 4}
    await wait_until(lambda: _states_are(db, expected))


# ---- filters, streams, fan-out, registration ------------------------------------------


async def test_include_and_exclude_filters_with_wildcards(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app(poll_interval=30)
    seen: list[str] = []

    @app.subscribe(
        ["order.*", "payment.>"],
        exclude=["order.created", "payment.*.test"],
        consumer="c",
    )
    async def handler(msg: kanthorq.Message) -> None:
        seen.append(msg.event.subject)

    await start_app(app)
    subjects = {
        "order.created": False,  # excluded
        "order.paid": True,
        "order.paid.extra": False,  # '*' is exactly one token
        "order": False,
        "payment": False,  # '>' needs at least one more token
        "payment.card": True,
        "payment.card.test": False,  # excluded
        "payment.card.live": True,
        "payment.card.live.eu": True,
        "user.created": False,
        "orders.paid": False,
    }
    ids = {s: await app.publish(s) for s in subjects}
    sentinel = await app.publish("order.sentinel")  # converted after all the others
    await wait_state(db, "c", sentinel, TaskState.COMPLETED)
    table = await task_table(db, "c")
    tasks = {r["event_id"] for r in await db.fetch(f"SELECT event_id FROM {table}")}
    assert tasks == {ids[s] for s, taken in subjects.items() if taken} | {sentinel}
    await wait_until(lambda: len(seen) == len(tasks))
    assert sorted(seen) == sorted(
        [s for s, taken in subjects.items() if taken] + ["order.sentinel"]
    )


async def test_stream_option_reads_only_its_stream(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app(poll_interval=30)
    seen: list[str] = []

    @app.subscribe("order.created", consumer="audit", stream="orders")
    async def audit(msg: kanthorq.Message) -> None:
        seen.append(msg.event.id)

    await start_app(app)
    elsewhere = await app.publish("order.created", b"default stream")
    ours = await app.publish("order.created", b"orders stream", stream="orders")
    sentinel = await app.publish("order.created", b"last", stream="orders")
    await wait_state(db, "audit", sentinel, TaskState.COMPLETED)
    table = await task_table(db, "audit")
    tasks = {r["event_id"] for r in await db.fetch(f"SELECT event_id FROM {table}")}
    assert tasks == {ours, sentinel}
    assert elsewhere not in seen
    registered = await db.fetchrow(
        "SELECT stream_name, stream_id FROM kanthorq_consumer_registry WHERE name = 'audit'"
    )
    assert registered["stream_name"] == "orders"
    assert registered["stream_id"] == await db.fetchval(
        "SELECT id FROM kanthorq_stream_registry WHERE name = 'orders'"
    )


async def test_two_consumers_on_one_subject_each_get_their_own_task(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app(poll_interval=30)
    refund_calls: list[int] = []

    @app.subscribe("order.cancelled", consumer="email")
    async def email(msg: kanthorq.Message) -> None:
        pass

    @app.subscribe(
        "order.cancelled", consumer="refund", max_retries=1, backoff=kanthorq.Fixed(delay=0.01)
    )
    async def refund(msg: kanthorq.Message) -> None:
        refund_calls.append(msg.task.attempt_count)
        raise RuntimeError("refund service down")

    await start_app(app)
    event_id = await app.publish("order.cancelled", {"order_id": 1})
    email_row = await wait_state(db, "email", event_id, TaskState.COMPLETED)
    refund_row = await wait_state(db, "refund", event_id, TaskState.DISCARDED)
    assert email_row["attempt_count"] == 1
    assert refund_row["attempt_count"] == 2
    assert refund_calls == [1, 2]
    assert await task_table(db, "email") != await task_table(db, "refund")


async def test_reregistering_a_consumer_updates_its_filters_and_budget(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    first = make_app(poll_interval=30)

    @first.subscribe("a.*", consumer="c", max_retries=3, visibility_timeout=60)
    async def one(msg: kanthorq.Message) -> None:
        pass

    running = await start_app(first)
    row = await db.fetchrow("SELECT * FROM kanthorq_consumer_registry WHERE name = 'c'")
    assert list(row["subject_includes"]) == ["a.*"]
    assert list(row["subject_excludes"]) == []
    assert row["attempt_max"] == 4
    assert row["visibility_timeout"] == 60_000
    consumer_id = row["id"]
    await running.stop()

    second = make_app(poll_interval=30)
    seen: list[str] = []

    @second.subscribe(["b.>"], exclude=["b.x"], consumer="c", max_retries=1, visibility_timeout=12)
    async def two(msg: kanthorq.Message) -> None:
        seen.append(msg.event.subject)

    await start_app(second)
    row = await db.fetchrow("SELECT * FROM kanthorq_consumer_registry WHERE name = 'c'")
    assert row["id"] == consumer_id  # same consumer, same task table
    assert list(row["subject_includes"]) == ["b.>"]
    assert list(row["subject_excludes"]) == ["b.x"]
    assert row["attempt_max"] == 2
    assert row["visibility_timeout"] == 12_000

    await second.publish("a.z")
    await second.publish("b.x")
    last = await second.publish("b.y.z")
    await wait_state(db, "c", last, TaskState.COMPLETED)
    assert await task_states(db, "c") == {TaskState.COMPLETED: 1}
    assert seen == ["b.y.z"]


# ---- in-process graceful shutdown ------------------------------------------------------


async def test_shutdown_waits_for_running_handlers_and_claims_nothing_new(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app(shutdown_timeout=10, poll_interval=30)
    started: list[str] = []
    finished: list[str] = []
    release = asyncio.Event()

    @app.subscribe("a.b", consumer="c", concurrency=1)
    async def handler(msg: kanthorq.Message) -> None:
        started.append(msg.event.id)
        await release.wait()
        finished.append(msg.event.id)

    running = await start_app(app)
    first = await app.publish("a.b", b"1")
    await wait_until(lambda: started == [first])
    second = await app.publish("a.b", b"2")
    await wait_state(db, "c", second, TaskState.AVAILABLE)  # converted, not claimed: no slot

    stopping = asyncio.create_task(running.stop())
    done, _ = await asyncio.wait({stopping}, timeout=0.3)
    assert not done, "shutdown returned while a handler was still running"
    release.set()
    await asyncio.wait_for(stopping, 10)

    assert finished == [first]
    assert started == [first]  # the freed slot claimed nothing after shutdown began
    row = await task_row(db, "c", first)
    assert row is not None
    assert row["state"] == TaskState.COMPLETED
    row = await task_row(db, "c", second)
    assert row is not None
    assert row["state"] == TaskState.AVAILABLE
    assert row["attempt_count"] == 0


async def test_shutdown_hands_back_handlers_that_outlive_the_grace_period(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app(shutdown_timeout=0.3, poll_interval=30)
    started: list[str] = []
    cancelled: list[str] = []

    @app.subscribe("a.b", consumer="c", visibility_timeout=300)
    async def handler(msg: kanthorq.Message) -> None:
        started.append(msg.event.id)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(msg.event.id)
            raise

    running = await start_app(app)
    event_id = await app.publish("a.b")
    await wait_until(lambda: started == [event_id])
    row = await task_row(db, "c", event_id)
    assert row is not None
    assert row["state"] == TaskState.RUNNING
    assert row["attempt_count"] == 1

    t0 = time.monotonic()
    await running.stop()
    assert time.monotonic() - t0 < 3.0
    assert cancelled == [event_id]
    row = await task_row(db, "c", event_id)
    assert row is not None
    assert row["state"] == TaskState.RETRYABLE
    assert row["attempt_count"] == 0  # the interrupted attempt is not counted
    assert row["schedule_at"] <= await db.fetchval("SELECT kanthorq_now_ms()")
    assert "shutdown" in errors_of(row)[-1]["error"]
    assert errors_of(row)[-1]["attempt"] == 1  # the attempt that was interrupted

    # handed back at once: another worker runs it without waiting for the visibility timeout
    again = make_app(poll_interval=30)
    attempts: list[int] = []

    @again.subscribe("a.b", consumer="c", visibility_timeout=300)
    async def handler2(msg: kanthorq.Message) -> None:
        attempts.append(msg.task.attempt_count)

    await start_app(again)
    row = await wait_state(db, "c", event_id, TaskState.COMPLETED, timeout=5)
    assert attempts == [1]
    assert row["attempt_count"] == 1


async def test_cancelling_run_hands_back_running_tasks(
    make_app: AppFactory, db: asyncpg.Connection
) -> None:
    app = make_app(shutdown_timeout=0.2, poll_interval=30)
    started: list[str] = []

    @app.subscribe("a.b", consumer="c", visibility_timeout=300)
    async def handler(msg: kanthorq.Message) -> None:
        started.append(msg.event.id)
        await asyncio.Event().wait()

    run = asyncio.create_task(app.run())
    await wait_until(lambda: app.listener is not None and app.listener.connected.is_set())
    event_id = await _publish_with(app, "a.b")
    await wait_until(lambda: started == [event_id])
    run.cancel()
    done, _ = await asyncio.wait({run}, timeout=5)
    assert done, "run() did not return after it was cancelled"
    assert run.cancelled()
    row = await task_row(db, "c", event_id)
    assert row is not None
    assert row["state"] == TaskState.RETRYABLE
    assert row["attempt_count"] == 0


async def _publish_with(app: kanthorq.App, subject: str) -> str:
    async with app:
        return await app.publish(subject)


# ---- claiming ---------------------------------------------------------------------------


async def test_before_handler_times_are_known_claims_only_the_free_handler_slots(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app(poll_interval=30)
    running_now = 0
    most = 0
    release = asyncio.Event()
    done: list[str] = []

    @app.subscribe("a.b", consumer="c", concurrency=3)
    async def handler(msg: kanthorq.Message) -> None:
        nonlocal running_now, most
        running_now += 1
        most = max(most, running_now)
        await release.wait()
        running_now -= 1
        done.append(msg.event.id)

    await start_app(app)
    ids = await app.publish_many([("a.b", b"") for _ in range(10)])
    await wait_until(lambda: _states_are(db, {TaskState.RUNNING: 3, TaskState.AVAILABLE: 7}))
    await wait_until(lambda: running_now == 3)
    release.set()
    await wait_until(lambda: _states_are(db, {TaskState.COMPLETED: 10}))
    assert sorted(done) == sorted(ids)
    assert most == 3


async def test_quick_handlers_claim_ahead_and_a_shutdown_hands_the_waiting_tasks_back(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app(shutdown_timeout=5, poll_interval=30)
    running_now = 0
    most = 0
    hold = False
    release = asyncio.Event()
    handled: list[str] = []

    @app.subscribe("a.b", consumer="c", concurrency=2, visibility_timeout=300)
    async def handler(msg: kanthorq.Message) -> None:
        nonlocal running_now, most
        running_now += 1
        most = max(most, running_now)
        if hold:
            await release.wait()
        running_now -= 1
        handled.append(msg.event.id)

    running = await start_app(app)
    quick = await app.publish_many([("a.b", b"") for _ in range(30)])  # handler times known
    await wait_until(lambda: _states_are(db, {TaskState.COMPLETED: 30}))
    hold = True
    held = await app.publish_many([("a.b", b"") for _ in range(50)])
    # two run, and the rest are claimed ahead of a free slot
    await wait_until(lambda: _states_are(db, {TaskState.COMPLETED: 30, TaskState.RUNNING: 50}))
    await wait_until(lambda: running_now == 2)

    stopping = asyncio.create_task(running.stop())
    await wait_until(
        lambda: _states_are(
            db, {TaskState.COMPLETED: 30, TaskState.RUNNING: 2, TaskState.RETRYABLE: 48}
        )
    )
    release.set()
    await asyncio.wait_for(stopping, 10)
    assert most == 2
    assert len(handled) == 32
    assert set(quick) <= set(handled)
    now = await db.fetchval("SELECT kanthorq_now_ms()")
    waiting = [eid for eid in held if eid not in handled]
    assert len(waiting) == 48
    for event_id in waiting:
        row = await task_row(db, "c", event_id)
        assert row is not None
        assert row["state"] == TaskState.RETRYABLE
        assert row["attempt_count"] == 0  # never started: the claim is not an attempt
        assert row["schedule_at"] <= now

    # another worker runs them at once, each once
    again = make_app(poll_interval=30)
    rerun: list[str] = []

    @again.subscribe("a.b", consumer="c", concurrency=2, visibility_timeout=300)
    async def handler2(msg: kanthorq.Message) -> None:
        rerun.append(msg.event.id)

    await start_app(again)
    await wait_until(lambda: _states_are(db, {TaskState.COMPLETED: 80}), timeout=10)
    assert sorted(rerun) == sorted(waiting)


async def _states_are(db: asyncpg.Connection, expected: dict[int, int]) -> bool:
    return await task_states(db, "c") == expected


async def test_two_workers_on_one_consumer_run_each_task_once(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    handled: list[tuple[str, str]] = []
    apps = [make_app(poll_interval=30), make_app(poll_interval=30)]
    for n, app in enumerate(apps):

        async def handler(msg: kanthorq.Message, who: str = f"w{n}") -> None:
            handled.append((who, msg.event.id))
            await asyncio.sleep(0)

        app.subscribe("a.>", consumer="c", concurrency=5)(handler)
    for app in apps:
        await start_app(app)
    ids: list[str] = []
    for batch in range(10):
        ids += await apps[batch % 2].publish_many([("a.b", b"") for _ in range(20)])
    await wait_until(lambda: _states_are(db, {TaskState.COMPLETED: len(ids)}))
    assert sorted(event_id for _, event_id in handled) == sorted(ids)


async def test_rescue_discards_a_task_whose_attempts_are_used_up(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app()
    attempts: list[int] = []
    gate = asyncio.Event()

    @app.subscribe("a.b", consumer="c", max_retries=0, visibility_timeout=30)
    async def handler(msg: kanthorq.Message) -> None:
        attempts.append(msg.task.attempt_count)
        await gate.wait()

    await start_app(app)
    event_id = await app.publish("a.b")
    await wait_until(lambda: attempts == [1])
    await age_running(db, "c", 60_000)
    row = await wait_state(db, "c", event_id, TaskState.DISCARDED)
    assert "visibility timeout" in errors_of(row)[-1]["error"]
    gate.set()  # the stalled handler returns late: its completion is fenced off
    sentinel = await app.publish("a.b")
    await wait_until(lambda: attempts == [1, 1])
    gate.set()
    await wait_state(db, "c", sentinel, TaskState.COMPLETED)
    row = await task_row(db, "c", event_id)
    assert row is not None
    assert row["state"] == TaskState.DISCARDED
    assert row["attempt_count"] == 1


async def test_task_whose_event_was_deleted_is_discarded(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app(poll_interval=30)
    seen: list[str] = []
    gate = asyncio.Event()

    @app.subscribe("a.b", consumer="c", concurrency=1, max_retries=5)
    async def handler(msg: kanthorq.Message) -> None:
        seen.append(msg.event.id)
        await gate.wait()

    await start_app(app)
    first = await app.publish("a.b")
    await wait_until(lambda: seen == [first])
    gone = await app.publish("a.b")
    await wait_state(db, "c", gone, TaskState.AVAILABLE)
    stream = await stream_table(db)
    await db.execute(f"DELETE FROM {stream} WHERE id = $1", gone)
    gate.set()
    row = await wait_state(db, "c", gone, TaskState.DISCARDED)
    assert seen == [first]
    assert row["attempt_count"] == 1
    assert "no longer exists" in errors_of(row)[-1]["error"]


async def test_worker_recovers_when_its_connections_are_killed(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app(poll_interval=0.3)
    seen: list[str] = []

    @app.subscribe("a.b", consumer="c")
    async def handler(msg: kanthorq.Message) -> None:
        seen.append(msg.event.id)

    running = await start_app(app)
    first = await app.publish("a.b")
    await wait_until(lambda: seen == [first])

    async def publish() -> str | None:
        workers_died(running)
        try:
            return await app.publish("a.b")
        except kanthorq.PublishError:  # the pool may hand out a connection just terminated
            return None

    rounds = 12  # the race it guards against shows up in one round of a few
    for _ in range(rounds):
        killed = await db.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert killed >= 2  # the pool's connections and the listener's
        event_id = await wait_until(publish, timeout=10)
        await wait_until(lambda e=event_id: e in seen or workers_died(running), timeout=10)
        assert event_id in seen
    await wait_until(lambda: _states_are(db, {TaskState.COMPLETED: rounds + 1}))


def workers_died(running: Running) -> bool:
    """Raise what killed run(), if it ended."""
    assert running.task is not None
    if running.task.done():
        running.task.result()
        raise AssertionError("run() returned")
    return False


async def test_a_backlog_is_converted_a_batch_at_a_time_as_runnable_tasks_run_out(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    """Claims do not wait behind the conversion of a whole backlog: the worker runs the
    tasks of one converted batch before it converts the next."""
    from kanthorq.worker import CONVERT_BATCH

    app = make_app(poll_interval=60)
    seen_tasks: list[int] = []
    done = 0

    @app.subscribe("bulk.>", consumer="bulk", concurrency=20)
    async def handle(msg: kanthorq.Message) -> None:
        nonlocal done
        done += 1
        if done == 100:
            async with app.pool.acquire() as conn:
                table = await task_table(conn, "bulk")
                seen_tasks.append(await conn.fetchval(f"SELECT count(*) FROM {table}"))

    await app.open()
    try:
        total = CONVERT_BATCH * 5 + 500
        await app.publish_many([("bulk.x", b"{}")] * total)
        running = await start_app(app)
        await wait_until(lambda: done >= total, timeout=60)
        # the start's poll and the listener's catch-up wake-up may each convert a batch;
        # the rest waits until the runnable tasks run out
        assert len(seen_tasks) == 1
        assert seen_tasks[0] <= 2 * CONVERT_BATCH
        everything = {int(TaskState.COMPLETED): total}
        await wait_until(lambda: _consumer_states_are(db, "bulk", everything))  # batched acks
        await running.stop()
    finally:
        await app.close()


async def _consumer_states_are(
    db: asyncpg.Connection, consumer: str, expected: dict[int, int]
) -> bool:
    return await task_states(db, consumer) == expected
