"""Deduplicated publishing: a key is written once per stream, across processes, inside a
caller's transaction and between racing publishers, while its event is there."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import asyncpg
import pytest

import kanthorq
from kanthorq.errors import InvalidPayload, StreamNotReady
from tests.conftest import stream_table
from tests.interop import gosql

AppFactory = Callable[..., kanthorq.App]


async def keyed(db: asyncpg.Connection, stream: str = "default") -> dict[str, str]:
    table = await stream_table(db, stream)
    rows = await db.fetch(f"SELECT dedup_key, id FROM {table} WHERE dedup_key IS NOT NULL")
    return {r["dedup_key"]: r["id"] for r in rows}


async def test_a_second_publish_with_the_key_returns_the_first_id_and_writes_nothing(
    make_app: AppFactory, db: asyncpg.Connection
) -> None:
    async with make_app() as app:
        first = await app.publish("order.cancelled", {"n": 1}, key="order-42-cancelled")
        again = await app.publish(
            "order.cancelled", {"n": 2}, key="order-42-cancelled", return_created=True
        )
        other = await app.publish(
            "order.cancelled", {"n": 3}, key="order-43-cancelled", return_created=True
        )
        plain = await app.publish("order.cancelled", {"n": 4})  # no key: always written
    assert again == (first, False)
    assert other[1] is True
    assert other[0] != first
    table = await stream_table(db)
    rows = await db.fetch(f"SELECT id, body, dedup_key FROM {table} ORDER BY id")
    assert [(r["id"], r["body"], r["dedup_key"]) for r in rows] == [
        (first, b'{"n":1}', "order-42-cancelled"),
        (other[0], b'{"n":3}', "order-43-cancelled"),
        (plain, b'{"n":4}', None),
    ]


async def test_sixteen_racing_publishers_write_each_of_100_keys_once(
    make_app: AppFactory, db: asyncpg.Connection
) -> None:
    apps = [make_app(pool_size=2) for _ in range(16)]
    for app in apps:
        await app.open()
    try:

        async def publisher(app: kanthorq.App) -> list[tuple[str, str, bool]]:
            made = []
            for n in range(100):
                event_id, created = await app.publish(
                    "job.run", {"n": n}, key=f"job-{n}", return_created=True
                )
                made.append((f"job-{n}", event_id, created))
            return made

        results = [row for rows in await asyncio.gather(*map(publisher, apps)) for row in rows]
    finally:
        await asyncio.gather(*(app.close() for app in apps))
    stored = await keyed(db)
    assert len(stored) == 100
    assert {key: event_id for key, event_id, _ in results} == stored  # every caller, one id
    assert Counter(key for key, _, created in results if created) == Counter(
        dict.fromkeys(stored, 1)
    )
    assert await db.fetchval(f"SELECT count(*) FROM {await stream_table(db)}") == 100


async def test_a_key_inside_the_callers_transaction(
    make_app: AppFactory, db: asyncpg.Connection
) -> None:
    async with make_app() as app:
        async with app.pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            await app.publish("a.b", b"1", key="k", conn=conn)
            await tx.rollback()
            # the rollback freed the key
            async with conn.transaction():
                first = await app.publish("a.b", b"2", key="k", conn=conn)
                assert await app.publish("a.b", b"3", key="k", conn=conn) == first
        assert await app.publish("a.b", b"4", key="k", return_created=True) == (first, False)
    assert await keyed(db) == {"k": first}


async def test_publish_many_takes_a_key_per_item(
    make_app: AppFactory, db: asyncpg.Connection
) -> None:
    async with make_app() as app:
        old = await app.publish("a.b", b"old", key="k1")
        made = await app.publish_many(
            [("a.b", b"x"), ("a.b", b"y"), ("a.b", b"z"), ("a.b", b"w")],
            keys=["k1", "k2", None, "k2"],
            return_created=True,
        )
        ids = await app.publish_many([("a.b", b"v")], keys=["k3"])
    assert made[0] == (old, False)
    assert made[1][1] is True
    assert made[2][1] is True
    assert made[3] == (made[1][0], False)  # a duplicate of an earlier item of the batch
    assert await keyed(db) == {"k1": old, "k2": made[1][0], "k3": ids[0]}


async def test_a_key_is_free_again_once_its_event_is_deleted(
    make_app: AppFactory, db: asyncpg.Connection
) -> None:
    async with make_app() as app:
        first = await app.publish("a.b", b"1", key="k")
        deleted = await app.admin.delete_events("default", before=timedelta(0))
        assert deleted.updated == 1
        second, created = await app.publish("a.b", b"2", key="k", return_created=True)
    assert created is True
    assert second != first


async def test_a_go_stream_gets_the_key_column_online_and_go_still_publishes(
    make_app: AppFactory, db: asyncpg.Connection
) -> None:
    stream = await gosql.register_stream(db, "orders")
    await gosql.publish(db, stream, "order.created", b"go")
    before = await db.fetchval("SELECT pg_relation_filenode($1)", stream.table)
    async with make_app(pool_size=1) as app:
        async with app.pool.acquire() as conn:  # holds the whole pool
            # inside a transaction the index cannot be built (it would wait for it): refused
            with pytest.raises(StreamNotReady, match="outside a transaction"):
                async with conn.transaction():
                    await app.publish("order.created", b"py", stream="orders", key="k", conn=conn)
            first = await app.publish("order.created", b"py", stream="orders", key="k", conn=conn)
            async with conn.transaction():  # ready now: in a transaction too
                again = await app.publish(
                    "order.created", b"2", stream="orders", key="k", conn=conn
                )
        assert again == first
    assert await db.fetchval("SELECT pg_relation_filenode($1)", stream.table) == before
    await gosql.publish(db, stream, "order.created", b"go again")  # writes no key
    keys = await db.fetch(f"SELECT dedup_key FROM {stream.table} ORDER BY id")
    assert [r["dedup_key"] for r in keys] == [None, "k", None]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ({"key": 42}, "key must be a str"),
        ({"key": ""}, "1 to 256 characters"),
        ({"key": "x" * 257}, "1 to 256 characters"),
        ({"key": "a\x00b"}, "NUL"),
    ],
)
async def test_bad_keys_are_refused_before_any_sql(
    make_app: AppFactory, db: asyncpg.Connection, call: dict[str, object], message: str
) -> None:
    async with make_app() as app:
        with pytest.raises(InvalidPayload, match=message):
            await app.publish("a.b", b"x", stream="fresh", **call)  # type: ignore[call-overload]
        with pytest.raises(InvalidPayload, match="one per item"):
            await app.publish_many([("a.b", b"x")], stream="fresh", keys=["a", "b"])
        with pytest.raises(InvalidPayload, match="a list"):
            await app.publish_many([("a.b", b"x")], stream="fresh", keys="a")
    # nothing was written, not even the stream
    assert await db.fetchval("SELECT count(*) FROM kanthorq_stream_registry") == 0
