"""The hard rules of DESIGN.md section 3: fencing after a rescue, and no skipped events."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from ulid import ULID

import kanthorq
from kanthorq import TaskState
from kanthorq.ids import now_ms
from tests.conftest import (
    Running,
    age_running,
    stream_table,
    task_row,
    task_table,
    wait_state,
    wait_until,
)

AppFactory = Callable[..., kanthorq.App]
Starter = Callable[..., Awaitable[Running]]


async def task_ids(db: asyncpg.Connection, consumer: str) -> list[str]:
    table = await task_table(db, consumer)
    return [r["event_id"] for r in await db.fetch(f"SELECT event_id FROM {table}")]


def ulid_ms(event_id: str) -> int:
    return int(ULID.from_str(event_id.removeprefix("event_").upper()).milliseconds)


# ---- fencing -----------------------------------------------------------------------------


class Attempts:
    """A handler whose attempts each block until the test settles them."""

    def __init__(self) -> None:
        self.messages: dict[int, kanthorq.Message] = {}
        self.gates: dict[int, asyncio.Event] = {}
        self.actions: dict[int, str] = {}
        self.results: dict[int, bool] = {}
        self.finished: list[int] = []

    async def __call__(self, msg: kanthorq.Message) -> None:
        attempt = msg.task.attempt_count
        self.messages[attempt] = msg
        gate = self.gates.setdefault(attempt, asyncio.Event())
        await gate.wait()
        action = self.actions.get(attempt, "return")
        if action == "ack":
            self.results[attempt] = await msg.ack()
        elif action == "nack":
            self.results[attempt] = await msg.nack("late nack")
        elif action == "cancel":
            self.results[attempt] = await msg.cancel()
        self.finished.append(attempt)

    async def settle(self, attempt: int, action: str) -> None:
        self.actions[attempt] = action
        self.gates.setdefault(attempt, asyncio.Event()).set()
        await wait_until(lambda: attempt in self.finished)


async def rescued_twice(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> tuple[Attempts, str, asyncpg.Record]:
    """Run a task, push its first attempt past the visibility timeout, and wait until a
    second attempt has claimed it. Returns the handler, the event id and the task row."""
    app = make_app()
    attempts = Attempts()

    @app.subscribe("a.b", consumer="c", visibility_timeout=30, max_retries=5)
    async def handler(msg: kanthorq.Message) -> None:
        await attempts(msg)

    await start_app(app)
    event_id = await app.publish("a.b")
    await wait_until(lambda: 1 in attempts.messages)
    await age_running(db, "c", 60_000, event_id)
    await wait_until(lambda: 2 in attempts.messages)
    row = await task_row(db, "c", event_id)
    assert row is not None
    assert row["state"] == TaskState.RUNNING
    assert row["attempt_count"] == 2
    assert "visibility timeout" in json.loads(row["attempted_error"][-1])["error"]
    return attempts, event_id, row


async def test_late_ack_after_rescue_changes_nothing(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    attempts, event_id, before = await rescued_twice(make_app, start_app, db)

    await attempts.settle(1, "ack")
    assert attempts.results[1] is False
    row = await task_row(db, "c", event_id)
    assert row is not None
    assert row["state"] == TaskState.RUNNING
    assert row["attempt_count"] == 2
    assert row["finalized_at"] == 0
    assert row["updated_at"] == before["updated_at"]

    await attempts.settle(2, "ack")
    assert attempts.results[2] is True
    row = await task_row(db, "c", event_id)
    assert row is not None
    assert row["state"] == TaskState.COMPLETED
    assert row["attempt_count"] == 2


async def test_late_nack_after_rescue_changes_nothing(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    attempts, event_id, before = await rescued_twice(make_app, start_app, db)

    await attempts.settle(1, "nack")
    assert attempts.results[1] is False
    row = await task_row(db, "c", event_id)
    assert row is not None
    assert row["state"] == TaskState.RUNNING
    assert row["attempt_count"] == 2
    assert row["attempted_error"] == before["attempted_error"]
    assert row["schedule_at"] == before["schedule_at"]

    await attempts.settle(2, "return")
    row = await wait_state(db, "c", event_id, TaskState.COMPLETED)
    assert row["attempt_count"] == 2
    assert row["attempted_error"] == before["attempted_error"]


async def test_late_return_and_cancel_after_rescue_change_nothing(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    attempts, event_id, _ = await rescued_twice(make_app, start_app, db)

    await attempts.settle(1, "cancel")
    assert attempts.results[1] is False
    # and the implicit completion of a handler that returns late: rescue a second time
    await age_running(db, "c", 60_000, event_id)
    await wait_until(lambda: 3 in attempts.messages)
    await attempts.settle(2, "return")
    # a completion of attempt 2 would be flushed within milliseconds; attempt 3 then nacks
    # and the task must end retryable, not completed
    await attempts.settle(3, "nack")
    assert attempts.results[3] is True
    row = await task_row(db, "c", event_id)
    assert row is not None
    assert row["state"] == TaskState.RETRYABLE
    assert row["attempt_count"] == 3


# ---- no skipped events ------------------------------------------------------------------


async def _publisher_in_tx(app: kanthorq.App) -> tuple[asyncpg.Connection, Any]:
    conn = await asyncpg.connect(app.dsn)
    tx = conn.transaction()
    await tx.start()
    return conn, tx


async def _publish_after(
    app: kanthorq.App, conn: asyncpg.Connection, after: str, n: int
) -> list[str]:
    """Publish n events in conn's transaction, all with ids larger than ``after``."""
    floor = ulid_ms(after)
    await wait_until(lambda: now_ms() > floor, interval=0.001)
    return [await app.publish("a.b", str(i).encode(), conn=conn) for i in range(n)]


async def test_commit_of_larger_ids_first_loses_nothing(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    """The transaction with the larger ids (and the older xid) commits first and is
    converted; the one with the smaller ids commits afterwards: nothing is skipped."""
    app = make_app(poll_interval=30)
    seen: list[str] = []

    @app.subscribe("a.>", consumer="c")
    async def handler(msg: kanthorq.Message) -> None:
        seen.append(msg.event.id)

    await start_app(app)
    big_conn, big_tx = await _publisher_in_tx(app)
    small_conn, small_tx = await _publisher_in_tx(app)
    try:
        await big_conn.fetchval("SELECT pg_current_xact_id()")  # older transaction
        small_ids = [await app.publish("a.b", b"s", conn=small_conn) for _ in range(3)]
        big_ids = await _publish_after(app, big_conn, max(small_ids), 3)
        assert min(big_ids) > max(small_ids)

        await big_tx.commit()
        await wait_until(lambda: _has_task(db, max(big_ids)))
        # the cursor has moved past the larger ids: the smaller ones commit now
        await small_tx.commit()
    finally:
        await big_conn.close()
        await small_conn.close()

    every = set(small_ids + big_ids)
    await wait_until(lambda: set(seen) == every)
    assert sorted(await task_ids(db, "c")) == sorted(every)
    assert len(seen) == len(every)


async def test_older_transaction_committing_last_loses_nothing(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    """The transaction with the smaller ids and the older xid stays open while the larger
    ids commit and the worker converts several times; then it commits."""
    app = make_app(poll_interval=30)
    seen: list[str] = []

    @app.subscribe("a.>", consumer="c")
    async def handler(msg: kanthorq.Message) -> None:
        seen.append(msg.event.id)

    await start_app(app)
    worker = app.workers["c"]
    converts = 0
    convert = worker.queries.convert

    async def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal converts
        result = await convert(*args, **kwargs)
        converts += 1
        return result

    worker.queries.convert = counting  # type: ignore[method-assign]

    small_conn, small_tx = await _publisher_in_tx(app)
    big_conn, big_tx = await _publisher_in_tx(app)
    try:
        small_ids = [await app.publish("a.b", b"s", conn=small_conn) for _ in range(3)]
        big_ids = await _publish_after(app, big_conn, max(small_ids), 3)
        await big_tx.commit()
        plain = await app.publish("a.c", b"outside any transaction of ours")
        seen_before = converts
        await wait_until(lambda: converts >= seen_before + 3)
        # nothing passed the open transaction: no task yet for anything after it
        assert await task_ids(db, "c") == []
        await small_tx.commit()
    finally:
        await big_conn.close()
        await small_conn.close()

    every = {*small_ids, *big_ids, plain}
    await wait_until(lambda: set(seen) == every)
    assert sorted(await task_ids(db, "c")) == sorted(every)
    assert len(seen) == len(every)


async def _has_task(db: asyncpg.Connection, event_id: str) -> bool:
    return await task_row(db, "c", event_id) is not None


async def test_concurrent_publishers_with_random_commit_delays(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app(poll_interval=30)  # notifications alone must drive it
    handled: Counter[str] = Counter()

    @app.subscribe("load.>", exclude=["load.skip"], consumer="c", concurrency=20)
    async def handler(msg: kanthorq.Message) -> None:
        handled[msg.event.id] += 1

    await start_app(app)
    rng = random.Random(20240611)
    matching: list[str] = []
    skipped: list[str] = []

    async def publisher(n: int) -> None:
        conn = await asyncpg.connect(app.dsn)
        try:
            for i in range(50):
                delay = rng.uniform(0, 0.05)
                async with conn.transaction():
                    if i % 10 == 9:  # now and then a batch through COPY
                        ids = await app.publish_many(
                            [("load.go", b"m"), ("load.skip", b"s"), ("load.go.deep", b"m")],
                            conn=conn,
                        )
                        matching.extend([ids[0], ids[2]])
                        skipped.append(ids[1])
                    else:
                        subject = "load.skip" if (n + i) % 3 == 0 else "load.go"
                        event_id = await app.publish(subject, b"x", conn=conn)
                        (skipped if subject == "load.skip" else matching).append(event_id)
                    await asyncio.sleep(delay)
        finally:
            await conn.close()

    await asyncio.gather(*(publisher(n) for n in range(8)))
    sentinel = await app.publish("load.go", b"last")
    matching.append(sentinel)

    await wait_until(lambda: _has_task(db, sentinel), timeout=20)
    await wait_until(lambda: len(handled) == len(matching), timeout=20)
    tasks = await task_ids(db, "c")
    assert len(tasks) == len(set(tasks))
    assert set(tasks) == set(matching)
    assert not set(tasks) & set(skipped)
    assert set(handled) == set(matching)
    assert max(handled.values()) == 1  # no failures, so each ran once
    stream = await stream_table(db)
    assert await db.fetchval(f"SELECT count(*) FROM {stream}") == len(matching) + len(skipped)


async def test_a_new_consumer_converts_the_whole_backlog_in_batches(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    """Events published before the consumer existed, more than one conversion batch of
    them, all become tasks exactly once."""
    app = make_app(poll_interval=30)
    async with app:
        ids = await app.publish_many(
            [("bulk.go" if i % 2 else "bulk.skip", b"") for i in range(2500)]
        )
        ids += await app.publish_many([("bulk.go", b"") for _ in range(10)])
    wanted = {event_id for i, event_id in enumerate(ids) if i % 2 or i >= 2500}
    handled: Counter[str] = Counter()

    @app.subscribe("bulk.go", consumer="c", concurrency=50)
    async def handler(msg: kanthorq.Message) -> None:
        handled[msg.event.id] += 1

    await start_app(app)
    await wait_until(lambda: len(handled) == len(wanted), timeout=30)
    assert set(handled) == wanted
    assert max(handled.values()) == 1
    assert sorted(await task_ids(db, "c")) == sorted(wanted)
