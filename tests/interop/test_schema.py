"""One schema for KanthorQ for Go and kanthorq, whichever migrated the database first, and the
migration of a database that kanthorq 0.1 made. Go's side is plain SQL (tests/interop/gosql.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

import kanthorq
from kanthorq import migrate
from kanthorq.store import ConsumerSpec
from kanthorq.testing.databases import scratch_database
from tests.conftest import registry, wait_until
from tests.interop import gosql, legacy

GO_TABLES = ("kanthorq_stream_registry", "kanthorq_consumer_registry")


@pytest.fixture
async def scratch(server_dsn: str) -> AsyncIterator[tuple[str, asyncpg.Connection]]:
    async with scratch_database(server_dsn) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            yield dsn, conn
        finally:
            await conn.close()


async def columns(conn: asyncpg.Connection, table: str) -> dict[str, tuple[Any, ...]]:
    """Each column of ``table``: its type, length, nullability and default."""
    rows = await conn.fetch(
        "SELECT column_name, data_type, udt_name, character_maximum_length, is_nullable, "
        "column_default FROM information_schema.columns WHERE table_name = $1",
        table,
    )
    return {r["column_name"]: tuple(r)[1:] for r in rows}


async def go_schema(server_dsn: str) -> dict[str, dict[str, tuple[Any, ...]]]:
    """The registry tables exactly as Go's migration makes them."""
    async with scratch_database(server_dsn) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await gosql.migrate(conn)
            return {t: await columns(conn, t) for t in GO_TABLES}
        finally:
            await conn.close()


def go_columns_of(
    ours: dict[str, tuple[Any, ...]], go: dict[str, tuple[Any, ...]]
) -> dict[str, tuple[Any, ...] | None]:
    return {name: ours.get(name) for name in go}


@pytest.mark.parametrize("bookkeeping", [True, False], ids=["with-go-bookkeeping", "without"])
@pytest.mark.parametrize("order", ["ours-first", "go-first"])
async def test_the_registry_has_go_types_and_defaults_whoever_migrated_first(
    server_dsn: str, scratch: tuple[str, asyncpg.Connection], order: str, bookkeeping: bool
) -> None:
    dsn, conn = scratch
    if order == "go-first":
        await gosql.migrate(conn, bookkeeping=bookkeeping)
    async with kanthorq.App(dsn) as app:  # opening migrates
        await app.publish("order.created", {"n": 1}, stream="orders")
    if order == "ours-first":
        await gosql.migrate(conn, bookkeeping=bookkeeping)  # Go's CREATE ... IF NOT EXISTS
    expected = await go_schema(server_dsn)
    for table in GO_TABLES:
        ours = await columns(conn, table)
        assert go_columns_of(ours, expected[table]) == expected[table], table
    # Go's registration, which leaves out kind, created_at and updated_at, works and gets
    # Go's values; so does a kanthorq consumer on Go's rows
    stream = await gosql.register_stream(conn, "orders")
    consumer = await gosql.GoConsumer.register(conn, stream, "go_mailer", ("order.>",))
    row = await conn.fetchrow(
        "SELECT kind, created_at, updated_at, kanthorq_now_ms() AS now "
        "FROM kanthorq_consumer_registry WHERE name = $1",
        consumer.name,
    )
    assert row["kind"] == 1
    assert row["now"] - 60_000 < row["created_at"] <= row["now"] + 1000
    assert row["now"] - 60_000 < row["updated_at"] <= row["now"] + 1000
    assert await consumer.run_all() != []  # it reads the event kanthorq published


async def test_go_first_then_a_kanthorq_worker_runs(
    server_dsn: str, scratch: tuple[str, asyncpg.Connection]
) -> None:
    dsn, conn = scratch
    await gosql.migrate(conn)
    stream = await gosql.register_stream(conn, "orders")
    go_ids = [await gosql.publish(conn, stream, "order.created", b"go") for _ in range(3)]
    app = kanthorq.App(dsn, poll_interval=0.2)
    seen: list[str] = []

    @app.subscribe("order.>", consumer="py_mailer", stream="orders")
    async def handle(msg: kanthorq.Message) -> None:
        seen.append(msg.event.id)
        if len(seen) == 3:
            await app.shutdown()

    await app.run()
    assert sorted(seen) == sorted(go_ids)
    row = await conn.fetchrow(
        "SELECT kind, txid_cursor = cursor AS coherent FROM kanthorq_consumer_registry "
        "WHERE name = 'py_mailer'"
    )
    assert (row["kind"], row["coherent"]) == (1, True)


async def test_a_go_stream_table_is_completed_online_without_a_rewrite(
    server_dsn: str, scratch: tuple[str, asyncpg.Connection]
) -> None:
    dsn, conn = scratch
    await gosql.migrate(conn)
    stream = await gosql.register_stream(conn, "orders")
    await conn.execute(
        f"INSERT INTO {stream.table} (id, subject, body, metadata, created_at) "
        "SELECT 'event_01j' || lpad(g::TEXT, 23, '0'), 'order.created', 'x', '{}', g "
        "FROM generate_series(1, 20000) AS g"
    )
    before = await conn.fetchval("SELECT pg_relation_filenode($1)", stream.table)
    async with kanthorq.App(dsn) as app:
        await registry(app.pool, dsn).consumer(
            ConsumerSpec("py_mailer", "orders", ("order.>",), (), 3, 30_000)
        )
    assert await conn.fetchval("SELECT pg_relation_filenode($1)", stream.table) == before
    counts = await conn.fetchrow(
        f"SELECT count(*) AS n, count(*) FILTER (WHERE txid = '0') AS zero FROM {stream.table}"
    )
    assert (counts["n"], counts["zero"]) == (20000, 20000)  # every old row, as transaction 0
    new = await gosql.publish(conn, stream, "order.created", b"later")
    txid = await conn.fetchval(f"SELECT txid::TEXT FROM {stream.table} WHERE id = $1", new)
    assert int(txid) > 0  # written after: its own transaction
    valid = await conn.fetchval(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)",
        f'"kanthorq_{stream.id}_txid"',
    )
    assert valid is True


async def test_a_database_of_kanthorq_0_1_is_converted_in_place(
    server_dsn: str, scratch: tuple[str, asyncpg.Connection]
) -> None:
    dsn, conn = scratch
    old = await legacy.build(conn)
    mailer = f'"kanthorq_{legacy.CONSUMERS["mailer"]}"'
    tasks_before = {r["event_id"]: dict(r) for r in await conn.fetch(f"SELECT * FROM {mailer}")}
    events_before = await conn.fetch(f'SELECT * FROM "kanthorq_{legacy.STREAM_ID}" ORDER BY id')

    applied = await migrate.up(conn)
    assert [m.version for m in applied] == [2, 3, 4, 5]

    expected = await go_schema(server_dsn)
    for table in GO_TABLES:
        ours = await columns(conn, table)
        assert go_columns_of(ours, expected[table]) == expected[table], table
    registered = {
        r["name"]: r
        for r in await conn.fetch(
            "SELECT name, kind, txid_cursor = cursor AS coherent FROM kanthorq_consumer_registry"
        )
    }
    assert {n: (r["kind"], r["coherent"]) for n, r in registered.items()} == {
        "mailer": (1, True),
        "fresh": (1, True),
    }
    # nothing lost: every task as it was, with deadline_at 0 and Go's updated_at default
    tasks_after = {r["event_id"]: dict(r) for r in await conn.fetch(f"SELECT * FROM {mailer}")}
    without_deadline = {
        k: {c: v for c, v in row.items() if c != "deadline_at"} for k, row in tasks_after.items()
    }
    assert without_deadline == tasks_before
    assert {row["deadline_at"] for row in tasks_after.values()} == {0}
    assert {row["state"] for row in tasks_after.values()} == set(legacy.STATES)
    events_after = await conn.fetch(f'SELECT * FROM "kanthorq_{legacy.STREAM_ID}" ORDER BY id')
    assert events_after == events_before
    default = await conn.fetchval(
        "SELECT column_default FROM information_schema.columns "
        "WHERE table_name = $1 AND column_name = 'updated_at'",
        mailer.strip('"'),
    )
    assert default == "kanthorq_now_ms()"

    # and the workers go on from where 0.1 stopped: the rest of the stream, once, and the
    # tasks that can run (the running ones are past their timeout: rescued, run again)
    app = kanthorq.App(dsn, poll_interval=0.2)
    handled: dict[str, list[str]] = {"mailer": [], "fresh": []}
    for name in handled:
        app.subscribe(
            "order.>", consumer=name, stream="orders", max_retries=3, visibility_timeout=30
        )(recorder(handled[name]))
    runnable = [e for e, s in old.tasks.items() if s in (1, 2, 102)]
    async with app:
        new = await app.publish("order.created", b"new", stream="orders")
        runner = asyncio.create_task(app.run())
        await wait_until(
            lambda: (
                set(handled["mailer"]) >= {*old.events[17:], new, *runnable}
                and len(handled["fresh"]) == len(old.events) + 1
            ),
            timeout=20,
        )
        await app.shutdown()
        await runner
    # mailer: the 7 unconverted events, the new one, and its runnable tasks; not the history
    assert sorted(handled["mailer"]) == sorted({*old.events[17:], new, *runnable})
    assert sorted(handled["fresh"]) == sorted([*old.events, new])


def recorder(seen: list[str]) -> Callable[[kanthorq.Message], Awaitable[None]]:
    async def handle(msg: kanthorq.Message) -> None:
        seen.append(msg.event.id)

    return handle
