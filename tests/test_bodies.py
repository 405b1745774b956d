"""Typed bodies: Pydantic models (with Pydantic installed), msgspec types, a body that cannot
decode (discarded at once), a type nothing decodes into (refused at subscribe), and
@app.subscribe used without its parentheses."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import asyncpg
import attrs
import msgspec
import pydantic
import pytest

import kanthorq
from kanthorq.errors import ConfigError, InvalidPayload, UndecodableBody
from kanthorq.testing import drain, message
from tests.conftest import stream_table, task_table

AppFactory = Callable[..., kanthorq.App]


class Order(pydantic.BaseModel):
    order_id: int = pydantic.Field(alias="orderId", gt=0)
    lines: list[str] = []


class OrderStruct(msgspec.Struct):
    order_id: int


@dataclasses.dataclass
class OrderData:
    order_id: int


@attrs.define
class OrderAttrs:
    order_id: int


class Plain:
    order_id: int


async def test_a_pydantic_annotation_decodes_with_the_models_validation(
    make_app: AppFactory, db: asyncpg.Connection
) -> None:
    app = make_app()
    seen: list[Order] = []
    discarded: list[BaseException] = []

    async def on_discard(msg: kanthorq.Message, exc: BaseException) -> None:
        discarded.append(exc)

    @app.subscribe("order.placed", consumer="c", max_retries=5, on_discard=on_discard)
    async def handle(order: Order) -> None:
        seen.append(order)

    async with app:
        good = await app.publish("order.placed", Order(orderId=7, lines=["a"]))
        raw = await app.publish("order.placed", b'{"orderId": 8}')
        invalid = await app.publish("order.placed", {"orderId": -1})  # fails gt=0
        not_json = await app.publish("order.placed", b"\xff not json")

    report = (await drain(app, timeout=20))["c"]

    # published with the model's own serializer, aliases included: it reads back
    body = await db.fetchval(f"SELECT body FROM {await stream_table(db)} WHERE id = $1", good)
    assert body == b'{"orderId":7,"lines":["a"]}'
    assert seen == [Order(orderId=7, lines=["a"]), Order(orderId=8)]
    assert report.completed == [good, raw]
    # a body that does not decode never will: discarded on its first attempt
    assert report.discarded == [invalid, not_json]
    assert [(e.event_id, e.attempt) for e in report.errors] == [(invalid, 1), (not_json, 1)]
    assert report.errors[0].error.startswith("UndecodableBody: the body does not decode into")
    assert "greater than 0" in report.errors[0].error
    assert [type(e) for e in discarded] == [UndecodableBody, UndecodableBody]
    assert isinstance(discarded[0].__cause__, pydantic.ValidationError)
    table = await task_table(db, "c")
    attempts = await db.fetchval(f"SELECT max(attempt_count) FROM {table} WHERE state = -102")
    assert attempts == 1


@pytest.mark.parametrize("kind", [OrderStruct, OrderData, OrderAttrs, list[Order]])
async def test_other_annotations_decode_and_fail_at_once(make_app: AppFactory, kind: type) -> None:
    app = make_app()
    seen: list[object] = []

    async def handle(body: object) -> None:
        seen.append(body)

    handle.__annotations__ = {"body": kind, "return": None}  # a local name, resolved
    app.subscribe("a.b", consumer="c", max_retries=3)(handle)

    good = b'[{"orderId": 1}]' if kind == list[Order] else b'{"order_id": 1}'
    async with app:
        await app.publish("a.b", good)
        bad = await app.publish("a.b", b'{"order_id": "one"}')
    report = (await drain(app, timeout=20))["c"]
    assert len(seen) == 1
    assert report.discarded == [bad]
    assert [e.attempt for e in report.errors] == [1]


def test_a_type_nothing_decodes_into_is_refused_at_subscribe(make_app: AppFactory) -> None:
    app = make_app()
    with pytest.raises(ConfigError, match=r"handler .*handle: cannot decode event bodies into"):

        @app.subscribe("a.b")
        async def handle(body: Plain) -> None: ...

    assert app.subscriptions == {}


def test_subscribe_without_parentheses_is_a_type_error(make_app: AppFactory) -> None:
    app = make_app()
    with pytest.raises(TypeError, match=r"@app.subscribe needs its subjects.*above handle"):

        @app.subscribe  # type: ignore[arg-type]
        async def handle(msg: kanthorq.Message) -> None: ...

    assert app.subscriptions == {}


async def test_message_decoding_raises_undecodable_body() -> None:
    msg = message("a.b", b"not json")
    with pytest.raises(UndecodableBody, match="not JSON"):
        msg.json()
    with pytest.raises(UndecodableBody, match="does not decode into Order"):
        message("a.b", {"orderId": 0}).decode(Order)
    # it is a Discard, and a ValueError as msgspec's and Pydantic's errors are
    assert issubclass(UndecodableBody, kanthorq.Discard)
    assert issubclass(UndecodableBody, ValueError)


async def test_a_handler_that_decodes_itself_discards_at_once(make_app: AppFactory) -> None:
    app = make_app()

    @app.subscribe("a.b", consumer="c", max_retries=3)
    async def handle(msg: kanthorq.Message) -> None:
        msg.decode(Order)

    async with app:
        bad = await app.publish("a.b", {"orderId": "x"})
    report = (await drain(app, timeout=20))["c"]
    assert report.discarded == [bad]
    assert len(report.errors) == 1


async def test_nested_pydantic_models_encode_and_bad_bodies_are_refused(
    make_app: AppFactory, db: asyncpg.Connection
) -> None:
    async with make_app() as app:
        event_id = await app.publish("a.b", {"orders": [Order(orderId=1)]})
        with pytest.raises(InvalidPayload, match="cannot be encoded"):
            await app.publish("a.b", {"x": object()})
    body = await db.fetchval(f"SELECT body FROM {await stream_table(db)} WHERE id = $1", event_id)
    assert body == b'{"orders":[{"orderId":1,"lines":[]}]}'
