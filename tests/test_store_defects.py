"""Three store defects: undecodable JSON aborting a claim, completions matched by event id
alone, and task-table DDL on every start that waits for open transactions."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

import kanthorq
from kanthorq import TaskState
from kanthorq.completer import Completer
from kanthorq.ids import new_id
from kanthorq.store import ConsumerQueries, ConsumerSpec
from tests.conftest import Running, registry, stream_table, task_states, task_table, wait_until

AppFactory = Callable[..., kanthorq.App]
Starter = Callable[..., Awaitable[Running]]

# msgspec refuses both ("Number out of range"); Python's json takes the float (as inf) but
# not the int (more digits than int() converts)
HUGE_FLOAT = '{"x": 1' + "0" * 400 + ".5}"
HUGE_INT = '{"x": 1' + "0" * 5000 + "}"

SPEC = ConsumerSpec(
    name="c",
    stream="default",
    includes=("a.>",),
    excludes=(),
    attempt_max=5,
    visibility_timeout_ms=30_000,
)


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


async def insert_event(
    db: asyncpg.Connection, subject: str = "a.b", metadata: str = "{}", stream: str = "default"
) -> str:
    """An event written with plain SQL, as psql or another client would."""
    table = await stream_table(db, stream)
    event_id = new_id("event")
    await db.execute(
        f"INSERT INTO {table} (id, subject, body, metadata) VALUES ($1, $2, 'x', $3::JSONB)",
        event_id,
        subject,
        metadata,
    )
    return event_id


async def converted(queries: ConsumerQueries, pool: asyncpg.Pool, tasks: int) -> None:
    total = 0

    async def more() -> bool:
        nonlocal total
        total += (await queries.convert(pool, 1000)).inserted
        return total >= tasks

    await wait_until(more)


async def index_exists(db: asyncpg.Connection, quoted: str) -> bool:
    return bool(await db.fetchval("SELECT to_regclass($1) IS NOT NULL", quoted))


# ---- 1. metadata that msgspec cannot decode ----------------------------------------------


async def test_an_event_whose_metadata_msgspec_refuses_is_handled_and_the_app_lives_on(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app()
    seen: dict[str, dict[str, Any]] = {}

    @app.subscribe("a.>", consumer="c")
    async def handler(msg: kanthorq.Message) -> None:
        seen[msg.event.id] = dict(msg.event.metadata)

    running = await start_app(app)
    table = await stream_table(db)
    good = [new_id("event") for _ in range(3)]
    odd_float, odd_int = new_id("event"), new_id("event")
    # one transaction, so the odd events are converted and claimed in the same batch as the
    # good ones
    async with db.transaction():
        for event_id, metadata in [
            (good[0], '{"n": 0}'),
            (odd_float, HUGE_FLOAT),
            (good[1], '{"n": 1}'),
            (odd_int, HUGE_INT),
            (good[2], '{"n": 2}'),
        ]:
            await db.execute(
                f"INSERT INTO {table} (id, subject, body, metadata) "
                "VALUES ($1, 'a.b', 'x', $2::JSONB)",
                event_id,
                metadata,
            )
        await db.execute(f"NOTIFY {table}")  # a wake-up; the poll would find them too

    await wait_until(lambda: len(seen) == 5)
    assert seen[odd_float] == {"x": math.inf}  # Python's json took it
    assert seen[odd_int] == {}  # nothing could: an empty object, and a warning
    assert [seen[event_id] for event_id in good] == [{"n": 0}, {"n": 1}, {"n": 2}]
    await wait_until(lambda: _all_completed(db, 5))
    assert running.task is not None
    assert not running.task.done()

    # the worker still claims: a later event is handled too
    later = await insert_event(db, metadata='{"later": true}')
    await wait_until(lambda: later in seen)
    assert seen[later] == {"later": True}
    await wait_until(lambda: _all_completed(db, 6))
    assert not running.task.done()


async def _all_completed(db: asyncpg.Connection, n: int) -> bool:
    return await task_states(db, "c") == {int(TaskState.COMPLETED): n}


async def test_task_metadata_and_errors_that_cannot_be_decoded_do_not_abort_a_claim(
    pool: asyncpg.Pool, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture, dsn: str
) -> None:
    queries = await registry(pool, dsn).consumer(SPEC)
    odd = await insert_event(db)
    fine = await insert_event(db, metadata='{"ok": 1}')
    await converted(queries, pool, 2)
    tasks = await task_table(db, "c")
    await db.execute(
        f"UPDATE {tasks} SET metadata = $2::JSONB, "
        "attempted_error = ARRAY[$3::JSONB, $2::JSONB, '{\"ok\": 1}'::JSONB, '[1]'::JSONB] "
        "WHERE event_id = $1",
        odd,
        HUGE_INT,
        HUGE_FLOAT,
    )
    raw_int = await db.fetchval("SELECT $1::JSONB::TEXT", HUGE_INT)

    with caplog.at_level(logging.WARNING, logger="kanthorq.store"):
        claimed = await queries.claim(pool, 10)

    by_id = {c.task.event_id: c for c in claimed}
    assert set(by_id) == {odd, fine}
    task = by_id[odd].task
    assert task.state == TaskState.RUNNING
    assert task.metadata == {}
    assert task.attempted_error == [{"x": math.inf}, {"raw": raw_int}, {"ok": 1}, {"raw": "[1]"}]
    event = by_id[odd].event
    assert event is not None
    assert event.metadata == {}
    assert by_id[fine].event is not None
    assert by_id[fine].event.metadata == {"ok": 1}
    warned = " ".join(r.getMessage() for r in caplog.records if r.name == "kanthorq.store")
    assert odd in warned
    assert fine not in warned
    # both claims are complete-able: nothing is stranded in running
    assert await queries.complete(pool, [odd, fine], [1, 1]) == {(odd, 1), (fine, 1)}
    assert await task_states(db, "c") == {int(TaskState.COMPLETED): 2}


# ---- 2. completions matched by (event id, attempt) ---------------------------------------


async def test_a_stale_and_the_current_attempt_in_one_batch(
    pool: asyncpg.Pool, db: asyncpg.Connection, dsn: str
) -> None:
    queries = await registry(pool, dsn).consumer(SPEC)
    event_id = await insert_event(db)
    await converted(queries, pool, 1)

    first = await queries.claim(pool, 10)
    assert [(c.task.event_id, c.task.attempt_count) for c in first] == [(event_id, 1)]
    tasks = await task_table(db, "c")
    await db.execute(f"UPDATE {tasks} SET attempted_at = attempted_at - 3600000")
    assert await queries.rescue(pool, SPEC.attempt_max) == (1, [])
    second = await queries.claim(pool, 10)
    assert [(c.task.event_id, c.task.attempt_count) for c in second] == [(event_id, 2)]

    completer = Completer(queries, pool, max_batch=2, delay=60.0)
    stale = completer.add(event_id, 1)
    current = completer.add(event_id, 2)  # the batch is full: both flush together
    assert await asyncio.wait_for(stale, 10) is False
    assert await asyncio.wait_for(current, 10) is True
    await completer.close()

    row = await db.fetchrow(f"SELECT * FROM {tasks} WHERE event_id = $1", event_id)
    assert row is not None
    assert row["state"] == TaskState.COMPLETED
    assert row["attempt_count"] == 2


async def test_complete_returns_the_attempts_that_changed(
    pool: asyncpg.Pool, db: asyncpg.Connection, dsn: str
) -> None:
    queries = await registry(pool, dsn).consumer(SPEC)
    event_id = await insert_event(db)
    await converted(queries, pool, 1)
    [claimed] = await queries.claim(pool, 10)
    assert claimed.task.attempt_count == 1

    assert await queries.complete(pool, [event_id], [7]) == set()  # falsy: nothing changed
    assert await queries.complete(pool, [event_id, event_id], [0, 1]) == {(event_id, 1)}
    assert not await queries.complete(pool, [event_id], [1])  # completed already


# ---- 3. DDL only when something is missing -----------------------------------------------


async def test_registering_a_consumer_does_not_wait_for_a_transaction_on_its_tasks(
    pool: asyncpg.Pool, dsn: str, db: asyncpg.Connection
) -> None:
    first = await registry(pool, dsn).consumer(SPEC)
    event_id = await insert_event(db)
    await converted(first, pool, 1)
    tasks = await task_table(db, "c")
    holder = await asyncpg.connect(dsn)
    try:
        async with holder.transaction():
            updated = await holder.execute(
                f"UPDATE {tasks} SET updated_at = updated_at + 1 WHERE event_id = $1", event_id
            )
            assert updated == "UPDATE 1"
            # another process starting: a fresh registry, nothing cached
            queries = await asyncio.wait_for(registry(pool, dsn).consumer(SPEC), 5)
            assert queries.consumer_id == first.consumer_id
            # and the claims of the other workers do not queue behind it
            async with pool.acquire() as conn:
                await conn.execute("SET lock_timeout = '1s'")
                try:
                    assert await queries.claim(conn, 10) == []  # the row is locked: skipped
                finally:
                    await conn.execute("RESET lock_timeout")
        [claimed] = await queries.claim(pool, 10)
        assert claimed.task.event_id == event_id
    finally:
        await holder.close()


async def test_an_app_starts_while_a_handler_holds_its_ack_transaction(
    make_app: AppFactory, start_app: Starter, dsn: str, db: asyncpg.Connection
) -> None:
    entered = asyncio.Event()
    gate = asyncio.Event()
    acked: list[bool] = []
    handled: list[str] = []
    holder = await asyncpg.connect(dsn)
    try:
        app = make_app()

        @app.subscribe("a.>", consumer="c")
        async def handler(msg: kanthorq.Message) -> None:
            if msg.event.subject != "a.hold":
                handled.append(msg.event.id)
                return
            async with holder.transaction():
                acked.append(await msg.ack(conn=holder))
                entered.set()
                await gate.wait()

        await start_app(app)
        held = await insert_event(db, subject="a.hold")
        await asyncio.wait_for(entered.wait(), 10)

        second = make_app()

        @second.subscribe("a.>", consumer="c")
        async def other(msg: kanthorq.Message) -> None:
            handled.append(msg.event.id)

        # a second process registers the same consumer while the ack is uncommitted
        await asyncio.wait_for(start_app(second), 5)
        later = await insert_event(db)

        gate.set()
        await wait_until(lambda: _all_completed(db, 2))
        assert acked == [True]
        assert handled == [later]
        assert held not in handled
    finally:
        gate.set()
        await holder.close()


async def test_a_dropped_index_or_table_comes_back_on_the_next_registration(
    pool: asyncpg.Pool, db: asyncpg.Connection, dsn: str
) -> None:
    queries = await registry(pool, dsn).consumer(SPEC)
    tasks = await task_table(db, "c")
    stream = await stream_table(db)
    task_indexes = [tasks[:-1] + suffix + '"' for suffix in ("_state", "_ready", "_running")]
    stream_index = stream[:-1] + '_txid"'
    for name in [*task_indexes, stream_index]:
        assert await index_exists(db, name), name

    await db.execute(f"DROP INDEX {task_indexes[1]}")
    await db.execute(f"DROP INDEX {stream_index}")
    again = await registry(pool, dsn).consumer(SPEC)
    assert again.consumer_id == queries.consumer_id
    for name in [*task_indexes, stream_index]:
        assert await index_exists(db, name), name

    # a stream table without its txid column (another client made it) gets it back
    await db.execute(f"ALTER TABLE {stream} DROP COLUMN txid")
    assert not await index_exists(db, stream_index)  # dropped with its column
    await registry(pool, dsn).consumer(SPEC)
    assert await index_exists(db, stream_index)
    assert await db.fetchval(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass($1) "
        "AND attname = 'txid' AND NOT attisdropped",
        stream,
    )

    # and a task table that is gone entirely
    await db.execute(f"DROP TABLE {tasks}")
    await registry(pool, dsn).consumer(SPEC)
    for name in [tasks, *task_indexes]:
        assert await index_exists(db, name), name
    event_id = await insert_event(db)
    await converted(again, pool, 1)
    [claimed] = await again.claim(pool, 10)
    assert claimed.task.event_id == event_id
