"""Publishing: bodies, metadata, ids, batches, the caller's transaction, new streams."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kanthorq
from kanthorq.errors import InvalidSubject
from kanthorq.ids import ID_RE, now_ms
from kanthorq.store import ConsumerSpec
from kanthorq.subjects import validate_subject
from tests.conftest import registry, stream_table, wait_until


class OrderCancelled(msgspec.Struct):
    order_id: int
    reason: str
    tags: list[str] = []


async def events(db: asyncpg.Connection, stream: str = "default") -> dict[str, asyncpg.Record]:
    table = await stream_table(db, stream)
    rows = await db.fetch(f"SELECT id, subject, body, metadata, created_at FROM {table}")
    return {row["id"]: row for row in rows}


def is_valid_subject(subject: str) -> bool:
    try:
        validate_subject(subject)
    except InvalidSubject:
        return False
    return True


def decoded(row: asyncpg.Record) -> object:
    return msgspec.json.decode(row["metadata"])


async def test_publish_bodies(
    make_app: Callable[..., kanthorq.App], db: asyncpg.Connection
) -> None:
    raw = bytes(range(256))  # not UTF-8, not JSON: kept as it is
    cases: list[tuple[object, bytes]] = [
        (raw, raw),
        (b"", b""),
        (bytearray(b"\x00\x01"), b"\x00\x01"),
        (memoryview(b"view"), b"view"),
        ({"order_id": 42, "ok": True}, b'{"order_id":42,"ok":true}'),
        (OrderCancelled(order_id=7, reason="late"), b'{"order_id":7,"reason":"late","tags":[]}'),
        ([1, "two", None], b'[1,"two",null]'),
        ("text", b'"text"'),
        (3.5, b"3.5"),
        ({"emoji": "🎉", "nul": "\x00"}, '{"emoji":"🎉","nul":"\\u0000"}'.encode()),
    ]
    started = now_ms()
    async with make_app() as app:
        ids = [await app.publish("order.cancelled", body) for body, _ in cases]
        default_body = await app.publish("order.created")
    stored = await events(db)
    assert len(stored) == len(cases) + 1
    for event_id, (_, expected) in zip(ids, cases, strict=True):
        assert ID_RE.fullmatch(event_id)
        assert event_id.startswith("event_")
        row = stored[event_id]
        assert row["body"] == expected
        assert row["subject"] == "order.cancelled"
        assert decoded(row) == {}
        assert started - 1000 <= row["created_at"] <= now_ms() + 1000
    assert stored[default_body]["body"] == b""
    assert len(set(ids)) == len(ids)
    # a Struct round-trips through Message.decode's decoder
    assert msgspec.json.decode(stored[ids[5]]["body"], type=OrderCancelled) == cases[5][0]


async def test_publish_metadata(
    make_app: Callable[..., kanthorq.App], db: asyncpg.Connection
) -> None:
    metadata = {
        "trace_id": "abc",
        "n": 1,
        "big": 2**70,
        "f": 1.5,
        "flag": False,
        "none": None,
        "nested": {"list": [1, {"x": "é"}], "empty": {}},
        "unicode 🎉": "ok",
    }
    async with make_app() as app:
        with_meta = await app.publish("a.b", b"x", metadata=metadata)
        without = await app.publish("a.b", b"x")
        empty = await app.publish("a.b", b"x", metadata={})
    stored = await events(db)
    assert decoded(stored[with_meta]) == metadata
    assert decoded(stored[without]) == {}
    assert decoded(stored[empty]) == {}


async def test_publish_many_forms_and_order(
    make_app: Callable[..., kanthorq.App], db: asyncpg.Connection
) -> None:
    items = [
        ("a.one", b"1"),
        ("a.two", {"n": 2}, {"m": 2}),
        kanthorq.Event(subject="a.three", body=b"3", metadata={"m": 3}),
        ("a.four", b"4", None),
        kanthorq.Event(subject="a.five"),
        ("a.six", OrderCancelled(order_id=6, reason="r")),
    ]
    async with make_app() as app:
        ids = await app.publish_many(items)
        assert await app.publish_many([]) == []
        from_generator = await app.publish_many((f"gen.n{i}", str(i).encode()) for i in range(3))
    assert len(ids) == len(items) == len(set(ids))
    stored = await events(db)
    assert [stored[i]["subject"] for i in ids] == [
        "a.one",
        "a.two",
        "a.three",
        "a.four",
        "a.five",
        "a.six",
    ]
    assert [stored[i]["body"] for i in ids] == [
        b"1",
        b'{"n":2}',
        b"3",
        b"4",
        b"",
        b'{"order_id":6,"reason":"r","tags":[]}',
    ]
    assert [decoded(stored[i]) for i in ids] == [{}, {"m": 2}, {"m": 3}, {}, {}, {}]
    assert [stored[i]["subject"] for i in from_generator] == ["gen.n0", "gen.n1", "gen.n2"]
    assert [stored[i]["body"] for i in from_generator] == [b"0", b"1", b"2"]
    assert all(ID_RE.fullmatch(i) for i in ids + from_generator)


async def test_publish_many_big_batch(
    make_app: Callable[..., kanthorq.App], db: asyncpg.Connection
) -> None:
    async with make_app() as app:
        ids = await app.publish_many(
            [(f"bulk.n{i % 7}", {"i": i}, {"i": i}) for i in range(5000)], stream="bulk"
        )
    table = await stream_table(db, "bulk")
    rows = await db.fetch(f"SELECT id, body, metadata FROM {table}")
    assert len(rows) == 5000
    by_id = {row["id"]: row for row in rows}
    for i in (0, 1234, 4999):
        assert msgspec.json.decode(by_id[ids[i]]["body"]) == {"i": i}
        assert msgspec.json.decode(by_id[ids[i]]["metadata"]) == {"i": i}


async def test_empty_publish_many_creates_nothing(
    make_app: Callable[..., kanthorq.App], db: asyncpg.Connection
) -> None:
    async with make_app() as app:
        assert await app.publish_many([], stream="never") == []
    assert not await db.fetchval("SELECT count(*) FROM kanthorq_stream_registry")


async def test_large_body(make_app: Callable[..., kanthorq.App], db: asyncpg.Connection) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB
    async with make_app() as app:
        one = await app.publish("big.one", body)
        many = await app.publish_many([("big.many", body), ("big.many", body)])
    stored = await events(db)
    assert all(stored[i]["body"] == body for i in [one, *many])


# ---- the caller's transaction ---------------------------------------------------------


async def count_events(db: asyncpg.Connection, stream: str = "default") -> int:
    table = await stream_table(db, stream)
    return int(await db.fetchval(f"SELECT count(*) FROM {table}"))


@pytest.mark.parametrize("many", [False, True], ids=["publish", "publish_many"])
async def test_conn_commit_and_rollback(
    make_app: Callable[..., kanthorq.App], db: asyncpg.Connection, dsn: str, many: bool
) -> None:
    async def publish(app: kanthorq.App, conn: asyncpg.Connection, subject: str) -> list[str]:
        if many:
            return await app.publish_many([(subject, b"1"), (subject, b"2")], conn=conn)
        return [await app.publish(subject, b"1", conn=conn)]

    caller = await asyncpg.connect(dsn)
    try:
        async with make_app() as app:
            # the stream does not exist yet: it is created (and stays) even if we roll back
            tx = caller.transaction()
            await tx.start()
            rolled_back = await publish(app, caller, "tx.rolled_back")
            await tx.rollback()
            assert await count_events(db) == 0

            async with caller.transaction():
                committed = await publish(app, caller, "tx.committed")
                # not visible to others before the commit, visible inside the transaction
                assert await count_events(db) == 0
                table = await stream_table(db)
                assert await caller.fetchval(f"SELECT count(*) FROM {table}") == len(committed)
            stored = await events(db)
            assert sorted(stored) == sorted(committed)
            assert not set(rolled_back) & set(stored)

            # a connection borrowed from the app's own pool works the same way
            async with app.pool.acquire() as pooled, pooled.transaction():
                pooled_ids = await publish(app, pooled, "tx.pooled")
            assert set(pooled_ids) <= set(await events(db))
    finally:
        await caller.close()


async def test_conn_from_a_busy_pool_does_not_wait_for_the_pool(
    make_app: Callable[..., kanthorq.App], db: asyncpg.Connection
) -> None:
    """A process's first publish to a stream that exists looks the stream up through the
    caller's connection: with every pooled connection held by callers in transactions
    (here the only one), waiting for another would never end."""
    async with make_app() as other:
        await other.publish("a.b", b"made elsewhere")
    async with make_app(pool_size=1) as app, app.pool.acquire() as conn, conn.transaction():
        one = await asyncio.wait_for(app.publish("a.b", b"1", conn=conn), 5)
    async with (
        make_app(pool_size=1) as fresh,
        fresh.pool.acquire() as conn,
        conn.transaction(),
    ):
        many = await asyncio.wait_for(fresh.publish_many([("a.b", b"2")], conn=conn), 5)
    assert {one, *many} <= set(await events(db))


async def publish_then_fail(app: kanthorq.App, caller: asyncpg.Connection) -> None:
    async with caller.transaction():
        await app.publish("tx.lost", b"x", conn=caller)
        await caller.execute("SELECT 1")
        raise RuntimeError("business failed")


async def test_conn_rollback_by_exception(
    make_app: Callable[..., kanthorq.App], db: asyncpg.Connection, dsn: str
) -> None:
    caller = await asyncpg.connect(dsn)
    try:
        async with make_app() as app:
            await app.publish("tx.first", b"x")  # the stream exists
            with pytest.raises(RuntimeError, match="business failed"):
                await publish_then_fail(app, caller)
        assert [r["subject"] for r in (await events(db)).values()] == ["tx.first"]
    finally:
        await caller.close()


async def test_notifications_follow_the_transaction(
    make_app: Callable[..., kanthorq.App], db: asyncpg.Connection, dsn: str
) -> None:
    got: list[str] = []

    def on_notify(conn: object, pid: int, channel: str, payload: str) -> None:
        got.append(channel)

    caller = await asyncpg.connect(dsn)
    try:
        async with make_app() as app:
            await app.publish("n.first", b"x")  # create the stream, then listen to it
            assert app._notifier is not None
            await app._notifier.flush()  # its notification is sent before we listen
            stream_id = await db.fetchval(
                "SELECT id FROM kanthorq_stream_registry WHERE name = 'default'"
            )
            channel = f"kanthorq_{stream_id}"
            await db.add_listener(channel, on_notify)
            await app.publish("n.own", b"x")
            await wait_until(lambda: got == [channel], timeout=5)

            got.clear()
            tx = caller.transaction()
            await tx.start()
            await app.publish("n.rolled_back", b"x", conn=caller)
            await tx.rollback()
            async with caller.transaction():
                await app.publish_many([("n.committed", b"x")], conn=caller)
            await wait_until(lambda: got == [channel], timeout=5)
            await asyncio.sleep(0.05)
            assert got == [channel]
    finally:
        await caller.close()


# ---- streams ----------------------------------------------------------------------------

CONTRACT_COLUMNS = {
    "id": ("character varying", 64),
    "subject": ("character varying", 256),
    "body": ("bytea", None),
    "metadata": ("jsonb", None),
    "created_at": ("bigint", None),
}


async def test_stream_is_created_on_first_use(
    make_app: Callable[..., kanthorq.App], db: asyncpg.Connection
) -> None:
    started = now_ms()
    async with make_app() as app:
        event_id = await app.publish("s.one", b"x", stream="orders")
    row = await db.fetchrow("SELECT * FROM kanthorq_stream_registry WHERE name = 'orders'")
    assert row is not None
    assert ID_RE.fullmatch(row["id"])
    assert row["id"].startswith("stream_")
    assert started - 1000 <= row["created_at"] <= now_ms() + 1000
    table = f"kanthorq_{row['id']}"
    columns = {
        r["column_name"]: (r["data_type"], r["character_maximum_length"])
        for r in await db.fetch(
            "SELECT column_name, data_type, character_maximum_length "
            "FROM information_schema.columns WHERE table_name = $1",
            table,
        )
    }
    assert {k: columns[k] for k in CONTRACT_COLUMNS} == CONTRACT_COLUMNS
    primary = await db.fetchval(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
        "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = $1::regclass AND i.indisprimary",
        f'"{table}"',
    )
    assert primary == "id"
    assert list(await events(db, "orders")) == [event_id]
    assert not await db.fetchval(
        "SELECT count(*) FROM kanthorq_stream_registry WHERE name <> 'orders'"
    )


async def test_default_stream_of_the_app(
    make_app: Callable[..., kanthorq.App], db: asyncpg.Connection
) -> None:
    async with make_app(stream="x") as app:
        one = await app.publish("a.b", b"1")
        many = await app.publish_many([("a.b", b"2")])
        other = await app.publish("a.b", b"3", stream="y")
    assert sorted(await events(db, "x")) == sorted([one, *many])
    assert list(await events(db, "y")) == [other]
    names = await db.fetch("SELECT name FROM kanthorq_stream_registry ORDER BY name")
    assert [r["name"] for r in names] == ["x", "y"]


async def test_concurrent_first_use_of_a_stream(
    make_app: Callable[..., kanthorq.App], db: asyncpg.Connection
) -> None:
    apps = [make_app(pool_size=4) for _ in range(3)]  # three "processes", one stream
    for app in apps:
        await app.open()
    try:
        calls = []
        for n in range(30):
            app = apps[n % len(apps)]
            if n % 2:
                calls.append(app.publish("c.one", {"n": n}, stream="burst"))
            else:
                calls.append(app.publish_many([("c.many", {"n": n})] * 3, stream="burst"))
        await asyncio.gather(*calls)
    finally:
        for app in apps:
            await app.close()
    assert await db.fetchval("SELECT count(*) FROM kanthorq_stream_registry") == 1
    tables = await db.fetchval(
        "SELECT count(*) FROM pg_tables WHERE tablename ~ '^kanthorq_stream_[0-9a-z]{26}$'"
    )
    assert tables == 1
    assert await count_events(db, "burst") == 15 + 15 * 3


async def test_stream_registered_by_another_client(
    make_app: Callable[..., kanthorq.App], db: asyncpg.Connection
) -> None:
    """A stream written by a client that knows only the contract columns (KanthorQ for Go)."""
    stream_id = "stream_01j00000000000000000000000"
    await db.execute(
        "INSERT INTO kanthorq_stream_registry (id, name, created_at, updated_at) "
        "VALUES ($1, 'shared', 1, 1)",
        stream_id,
    )
    await db.execute(
        f"""CREATE TABLE "kanthorq_{stream_id}" (
            id VARCHAR(64) NOT NULL PRIMARY KEY, subject VARCHAR(256) NOT NULL,
            body BYTEA, metadata JSONB NOT NULL DEFAULT '{{}}', created_at BIGINT NOT NULL)"""
    )
    await db.execute(
        f"""INSERT INTO "kanthorq_{stream_id}" (id, subject, body, metadata, created_at)
            VALUES ('event_01j00000000000000000000001', 'go.one', 'x', '{{}}', 1)"""
    )
    async with make_app() as app:
        event_id = await app.publish("py.one", b"y", stream="shared")
        stored = await events(db, "shared")
        assert sorted(r["subject"] for r in stored.values()) == ["go.one", "py.one"]
        assert event_id in stored
        assert await db.fetchval(
            "SELECT id FROM kanthorq_stream_registry WHERE name = 'shared'"
        ) == (stream_id)
        # publishing leaves the other client's table as it is: only a consumer needs txid
        assert (
            await db.fetchval(
                "SELECT count(*) FROM pg_attribute "
                "WHERE attrelid = $1::regclass AND attname = 'txid'",
                f'"kanthorq_{stream_id}"',
            )
            == 0
        )
        await registry(app.pool, app.dsn).consumer(
            ConsumerSpec("reader", "shared", (">",), (), 3, 30_000)
        )
    # the table got the column conversion needs, and a contract-only insert still works
    await db.execute(
        f"""INSERT INTO "kanthorq_{stream_id}" (id, subject, body, metadata, created_at)
            VALUES ('event_01j00000000000000000000002', 'go.two', 'x', '{{}}', 2)"""
    )
    assert await db.fetchval(f'SELECT count(txid) FROM "kanthorq_{stream_id}"') == 3


# ---- round trips of generated subjects and metadata ------------------------------------

_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8
)
_TOKEN = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters=".*>"),
    min_size=1,
    max_size=6,
)
_SUBJECT = st.lists(_TOKEN, min_size=1, max_size=4).map(".".join).filter(is_valid_subject)
_METADATA = st.dictionaries(
    _TEXT,
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        # jsonb keeps numbers as numerics: beyond 2**53 a float comes back as an int
        st.floats(min_value=-(2.0**53), max_value=2.0**53),
        _TEXT,
        st.lists(_TEXT, max_size=3),
    ),
    max_size=4,
)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(items=st.lists(st.tuples(_SUBJECT, st.binary(max_size=16), _METADATA), max_size=20))
async def test_any_valid_event_round_trips(
    make_app: Callable[..., kanthorq.App], db: asyncpg.Connection, items: list[Any]
) -> None:
    """Whatever passes validation is stored exactly (subjects, bytes, jsonb metadata)."""
    async with make_app(pool_size=1) as app:
        ids = await app.publish_many(items, stream="roundtrip")
        if items:
            single = await app.publish(
                items[0][0], items[0][1], metadata=items[0][2], stream="roundtrip"
            )
            ids.append(single)
            items = [*items, items[0]]
    if not ids:
        return
    table = await stream_table(db, "roundtrip")
    rows = await db.fetch(
        f"SELECT id, subject, body, metadata FROM {table} WHERE id = ANY($1::TEXT[])", ids
    )
    stored = {row["id"]: row for row in rows}
    for event_id, (subject, body, metadata) in zip(ids, items, strict=True):
        row = stored[event_id]
        assert row["subject"] == subject
        assert row["body"] == body
        assert msgspec.json.decode(row["metadata"]) == metadata


# ---- group commit ---------------------------------------------------------------------


async def test_concurrent_publishes_are_written_together_and_each_returns_its_own_id(
    make_app: Callable[..., kanthorq.App], db: asyncpg.Connection
) -> None:
    async with make_app(pool_size=4) as app:
        alone = await app.publish("a.b", {"n": -1})  # nothing in flight: a write of its own
        ids = await asyncio.gather(*(app.publish("a.b", {"n": n}) for n in range(64)))
    table = await stream_table(db)
    rows = await db.fetch(f"SELECT id, body, txid::TEXT AS txid FROM {table}")
    stored = {r["id"]: r for r in rows}
    assert set(stored) == {alone, *ids}
    assert [msgspec.json.decode(stored[i]["body"]) for i in ids] == [{"n": n} for n in range(64)]
    transactions = {r["txid"] for r in rows}
    assert len(transactions) < 65  # gathered: fewer commits than events
    alone_txid = stored[alone]["txid"]
    assert sum(r["txid"] == alone_txid for r in rows) == 1
