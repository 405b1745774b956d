"""Item 11: hostile bodies and metadata."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import msgspec
import pytest

import kanthorq
from kanthorq import TaskState
from kanthorq.errors import InvalidPayload, PayloadTooLarge, UndecodableBody
from tests.conftest import Running, stream_table, task_row, wait_state, wait_until

Starter = Callable[..., Awaitable[Running]]
MAX_BODY = 4096
BACKOFF = 600.0  # seconds: a retry would not come back within the test


def nested(depth: int, leaf: Any, *, as_list: bool = False) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value] if as_list else {"k": value}
    return value


HOSTILE_METADATA: dict[str, tuple[dict[str, Any], str]] = {
    "lone surrogate": ({"k": "a\ud800b"}, "surrogate"),
    "lone surrogate key": ({"\udfff": 1}, "surrogate"),
    "NUL": ({"k": "a\u0000b"}, "NUL"),
    "NUL key": ({"a\u0000": 1}, "NUL"),
    "NaN": ({"k": float("nan")}, "nan"),
    "infinity": ({"k": [1, float("inf")]}, "inf"),
    "10,000 levels of objects": (nested(10_000, 1), "nested deeper"),
    "10,000 levels of arrays": ({"k": nested(10_000, 1, as_list=True)}, "nested deeper"),
    "not JSON": ({"k": object()}, "JSON"),
    "non-str key": ({1: "a"}, "not a str"),
}


async def test_bodies_round_trip(dsn: str, db: asyncpg.Connection, start_app: Starter) -> None:
    app = kanthorq.App(dsn, poll_interval=0.5)
    got: dict[str, bytes] = {}

    @app.subscribe("job.>", consumer="jobs")
    async def handle(msg: kanthorq.Message) -> None:
        got[msg.event.id] = msg.event.body

    await start_app(app)
    big = os.urandom(1024 * 1024)
    sent = {
        await app.publish("job.empty"): b"",
        await app.publish("job.empty", b""): b"",
        await app.publish("job.big", big): big,
        await app.publish("job.nul", b"\x00\xff\x00"): b"\x00\xff\x00",
        # a JSON string with a NUL in it is fine in a body (bytea), unlike jsonb metadata
        await app.publish("job.json", {"text": "a\u0000b"}): b'{"text":"a\\u0000b"}',
    }
    await wait_until(lambda: len(got) == len(sent), timeout=15)
    for event_id, body in sent.items():
        assert hashlib.sha256(got[event_id]).digest() == hashlib.sha256(body).digest(), event_id
    events = await stream_table(db)
    assert await db.fetchval(f"SELECT length(body) FROM {events} WHERE body = $1", big) == len(big)


async def test_body_over_the_maximum_is_refused_before_any_insert(
    dsn: str, db: asyncpg.Connection
) -> None:
    app = kanthorq.App(dsn, max_body_size=MAX_BODY)
    async with app:
        for body in (b"x" * (MAX_BODY + 1), {"k": "x" * MAX_BODY}):
            with pytest.raises(PayloadTooLarge, match=f"maximum of {MAX_BODY}"):
                await app.publish("a.b", body, stream="big")
            with pytest.raises(kanthorq.PayloadTooLarge):
                await app.publish_many([("a.b", b"ok"), ("a.b", body)], stream="big")
        # not even the stream was created: nothing reached the database
        assert await db.fetchval("SELECT count(*) FROM kanthorq_stream_registry") == 0
        await app.publish("a.b", b"x" * MAX_BODY, stream="big")  # the maximum itself is fine
    assert await db.fetchval(f"SELECT count(*) FROM {await stream_table(db, 'big')}") == 1


@pytest.mark.parametrize("case", sorted(HOSTILE_METADATA))
async def test_hostile_metadata_is_a_clear_error_at_publish(
    case: str, dsn: str, db: asyncpg.Connection
) -> None:
    metadata, says = HOSTILE_METADATA[case]
    app = kanthorq.App(dsn)
    async with app:
        with pytest.raises(InvalidPayload, match=f"(?i){says}"):
            await app.publish("a.b", b"", metadata=metadata, stream="meta")
        with pytest.raises(InvalidPayload, match=f"(?i){says}"):
            await app.publish_many([("a.b", b"", {}), ("a.b", b"", metadata)], stream="meta")
        assert await db.fetchval("SELECT count(*) FROM kanthorq_stream_registry") == 0


class Order(msgspec.Struct):
    id: int


@pytest.mark.parametrize(
    "body", [b"not json", b'{"id": "seven"}', b"", b"[1, 2]", b'{"id": 1', b"\xff\xfe"]
)
async def test_undecodable_body_is_discarded_at_once(
    body: bytes, dsn: str, db: asyncpg.Connection, start_app: Starter
) -> None:
    app = kanthorq.App(dsn, poll_interval=0.5)
    decoded: list[Order] = []
    discarded: list[tuple[str, BaseException]] = []

    async def on_discard(msg: kanthorq.Message, error: BaseException) -> None:
        discarded.append((msg.event.id, error))

    @app.subscribe(
        "job.>",
        consumer="orders",
        max_retries=2,
        backoff=kanthorq.Fixed(delay=BACKOFF),
        on_discard=on_discard,
    )
    async def handle(order: Order) -> None:
        decoded.append(order)

    await start_app(app)
    event_id = await app.publish("job.order", body)
    # the same bytes will never decode: no backoff, no retry, whatever the budget
    row = await wait_state(db, "orders", event_id, TaskState.DISCARDED)
    assert row["attempt_count"] == 1
    [error] = [json.loads(e) for e in row["attempted_error"]]
    assert error["attempt"] == 1
    assert error["error"].startswith("UndecodableBody: the body does not decode into Order")
    assert decoded == []
    await wait_until(lambda: discarded, timeout=5)
    assert [d[0] for d in discarded] == [event_id]
    assert isinstance(discarded[0][1], UndecodableBody)
    assert isinstance(discarded[0][1].__cause__, msgspec.DecodeError | msgspec.ValidationError)
    assert (await task_row(db, "orders", event_id)) is not None
