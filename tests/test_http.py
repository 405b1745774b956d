"""Publishing over HTTP (kanthorq.http), against a real uvicorn server on a free port and a
real PostgreSQL: every status code, tokens, limits, the batch's all-or-nothing, 32
concurrent clients, a database that is down, and every answer checked against the OpenAPI
document the server serves."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import asyncpg
import httpx
import jsonschema
import msgspec
import pytest
import uvicorn

import kanthorq
import kanthorq.http
from kanthorq.cli import main
from kanthorq.errors import MissingExtra, NotPublished, PublishOutcomeUnknown
from kanthorq.extras import needs
from kanthorq.tokens import Token, Tokens
from tests.conftest import wait_until

SECRET = "t0ken"
AUTH = {"Authorization": f"Bearer {SECRET}"}
ROOT = Path(__file__).resolve().parent.parent


class Answers:
    """Every answer the tests got, for the OpenAPI check."""

    seen: ClassVar[list[tuple[str, str, int, Any]]] = []

    @classmethod
    async def record(cls, response: httpx.Response) -> None:
        await response.aread()
        body = (
            response.json()
            if response.headers.get("content-type", "").startswith("application/json")
            else None
        )
        request = response.request
        cls.seen.append((request.method, request.url.path, response.status_code, body))


@contextlib.asynccontextmanager
async def serving(
    kq: kanthorq.App, tokens: Tokens | Iterable[Token | str] = (SECRET,), **options: Any
) -> AsyncIterator[str]:
    """The HTTP publisher of ``kq`` under uvicorn, on a free port; its base URL."""
    async with uvicorn_serving(kanthorq.http.app(kq, tokens=tokens, **options)) as base:
        yield base


@contextlib.asynccontextmanager
async def uvicorn_serving(api: Any) -> AsyncIterator[str]:
    """The ASGI app ``api`` under uvicorn, on a free port; its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(api, log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await wait_until(lambda: server.started or task.done(), timeout=15)
        if task.done():
            task.result()
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        sock.close()


def client(base: str, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base,
        headers=AUTH if headers is None else headers,
        event_hooks={"response": [Answers.record]},
        timeout=30,
    )


@pytest.fixture
async def served(make_app: Callable[..., kanthorq.App]) -> AsyncIterator[tuple[kanthorq.App, str]]:
    kq = make_app(stream="orders")
    async with serving(kq, max_body_size=4096, max_batch=10) as base:
        yield kq, base


async def stored(db: asyncpg.Connection, stream: str) -> list[asyncpg.Record]:
    stream_id = await db.fetchval("SELECT id FROM kanthorq_stream_registry WHERE name = $1", stream)
    if stream_id is None:
        return []
    return list(await db.fetch(f'SELECT id, subject, body FROM "kanthorq_{stream_id}" ORDER BY id'))


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


# ---- publishing one event -------------------------------------------------------------


async def test_a_json_event_is_published_201_and_read_back(
    served: tuple[kanthorq.App, str], db: asyncpg.Connection
) -> None:
    _, base = served
    async with client(base) as http:
        r = await http.post(
            "/v1/streams/orders/events",
            json={
                "subject": "order.created",
                "body": {"id": 42, "n": [1, 2]},
                "metadata": {"a": 1},
            },
        )
        assert r.status_code == 201
        event_id = r.json()["id"]
        assert r.json() == {"id": event_id, "created": True}
        assert r.headers["location"] == f"/v1/streams/orders/events/{event_id}"
        got = await http.get(r.headers["location"])
    assert got.status_code == 200
    event = got.json()
    assert event["stream"] == "orders"
    assert event["subject"] == "order.created"
    assert event["metadata"] == {"a": 1}
    assert event["body"]["encoding"] == "json"
    assert event["body"]["value"] == {"id": 42, "n": [1, 2]}
    [row] = await stored(db, "orders")
    assert msgspec.json.decode(row["body"]) == {"id": 42, "n": [1, 2]}


async def test_a_key_publishes_once_then_answers_200_with_the_first_id(
    served: tuple[kanthorq.App, str], db: asyncpg.Connection
) -> None:
    _, base = served
    async with client(base) as http:
        first = await http.post(
            "/v1/streams/orders/events", json={"subject": "pay.once", "body": 1, "key": "p-1"}
        )
        again = await http.post(
            "/v1/streams/orders/events", json={"subject": "pay.once", "body": 2, "key": "p-1"}
        )
        header = await http.post(
            "/v1/streams/orders/events",
            json={"subject": "pay.once", "body": 3},
            headers={**AUTH, "Idempotency-Key": "p-1"},
        )
        differs = await http.post(
            "/v1/streams/orders/events",
            json={"subject": "pay.once", "key": "p-2"},
            headers={**AUTH, "Idempotency-Key": "p-1"},
        )
    assert first.status_code == 201
    assert again.status_code == 200
    assert header.status_code == 200
    assert again.json() == header.json() == {"id": first.json()["id"], "created": False}
    assert differs.status_code == 422
    assert error_of(differs)["field"] == "key"
    assert len(await stored(db, "orders")) == 1


async def test_a_body_that_is_not_json_is_stored_as_bytes(
    served: tuple[kanthorq.App, str], db: asyncpg.Connection
) -> None:
    _, base = served
    raw = bytes(range(256))
    async with client(base) as http:
        by_query = await http.post(
            "/v1/streams/orders/events",
            params={"subject": "blob.put", "metadata": '{"source": "curl"}'},
            content=raw,
            headers={**AUTH, "Content-Type": "application/octet-stream"},
        )
        by_header = await http.post(
            "/v1/streams/orders/events",
            content=b"plain words",
            headers={**AUTH, "Content-Type": "text/plain", "KanthorQ-Subject": "note.added"},
        )
        missing = await http.post(
            "/v1/streams/orders/events",
            content=b"x",
            headers={**AUTH, "Content-Type": "text/plain"},
        )
        read = await http.get(f"/v1/streams/orders/events/{by_query.json()['id']}")
        text = await http.get(f"/v1/streams/orders/events/{by_header.json()['id']}")
    assert by_query.status_code == by_header.status_code == 201
    assert missing.status_code == 422
    assert error_of(missing)["field"] == "subject"
    assert read.json()["body"] == {
        "size": 256,
        "encoding": "base64",
        "value": base64.b64encode(raw).decode(),
    }
    assert read.json()["metadata"] == {"source": "curl"}
    assert text.json()["body"]["value"] == "plain words"
    rows = {r["subject"]: r["body"] for r in await stored(db, "orders")}
    assert rows == {"blob.put": raw, "note.added": b"plain words"}


async def test_delay_and_at_schedule_the_event(served: tuple[kanthorq.App, str]) -> None:
    _, base = served
    async with client(base) as http:
        later = await http.post(
            "/v1/streams/orders/events", json={"subject": "a.b", "body": {}, "delay": 3600}
        )
        at = await http.post(
            "/v1/streams/orders/events",
            json={"subject": "a.b", "at": "2030-01-01T00:00:00Z"},
        )
        both = await http.post(
            "/v1/streams/orders/events",
            json={"subject": "a.b", "delay": 1, "at": "2030-01-01T00:00:00Z"},
        )
        naive = await http.post(
            "/v1/streams/orders/events", json={"subject": "a.b", "at": "2030-01-01T00:00:00"}
        )
        negative = await http.post(
            "/v1/streams/orders/events", json={"subject": "a.b", "delay": -1}
        )
        read_later = await http.get(f"/v1/streams/orders/events/{later.json()['id']}")
        read_at = await http.get(f"/v1/streams/orders/events/{at.json()['id']}")
    assert later.status_code == at.status_code == 201
    scheduled = read_later.json()["metadata"]["kanthorq.schedule_at"]
    assert scheduled - read_later.json()["created_at"] >= 3_599_000
    assert read_at.json()["metadata"]["kanthorq.schedule_at"] == 1_893_456_000_000
    for bad, field in ((both, "at"), (naive, "at"), (negative, "delay")):
        assert bad.status_code == 422, bad.text
        assert error_of(bad)["field"] == field


# ---- batches ----------------------------------------------------------------------------


async def test_a_batch_as_json_or_ndjson_answers_the_ids_in_order(
    served: tuple[kanthorq.App, str], db: asyncpg.Connection
) -> None:
    _, base = served
    items = [{"subject": f"item.n{i}", "body": {"i": i}} for i in range(5)]
    lines = b"\n".join(msgspec.json.encode(item) for item in items) + b"\n"
    async with client(base) as http:
        array = await http.post("/v1/streams/orders/events:batch", json=items)
        ndjson = await http.post(
            "/v1/streams/orders/events:batch",
            content=lines,
            headers={**AUTH, "Content-Type": "application/x-ndjson"},
            params={"delay": "60"},
        )
        keyed = await http.post(
            "/v1/streams/orders/events:batch",
            json=[{"subject": "k.v", "key": "a"}, {"subject": "k.v", "key": "a"}],
        )
        scheduled = await http.get(f"/v1/streams/orders/events/{ndjson.json()['ids'][0]}")
    assert array.status_code == ndjson.status_code == keyed.status_code == 201
    assert keyed.json()["created"] == [True, False]
    assert keyed.json()["ids"][0] == keyed.json()["ids"][1]
    assert "kanthorq.schedule_at" in scheduled.json()["metadata"]
    rows = {r["id"]: r for r in await stored(db, "orders")}
    assert len(rows) == 11
    for ids in (array.json()["ids"], ndjson.json()["ids"]):
        assert [rows[i]["subject"] for i in ids] == [item["subject"] for item in items]
        assert ids == sorted(ids)


async def test_a_batch_with_one_invalid_item_stores_nothing(
    served: tuple[kanthorq.App, str], db: asyncpg.Connection
) -> None:
    _, base = served
    good = {"subject": "fine.one", "body": {}}
    async with client(base) as http:
        bad_subject = await http.post(
            "/v1/streams/orders/events:batch", json=[good, good, {"subject": "not..valid"}]
        )
        bad_type = await http.post(
            "/v1/streams/orders/events:batch", json=[good, {"subject": "x", "metadata": [1]}]
        )
        bad_line = await http.post(
            "/v1/streams/orders/events:batch",
            content=b'{"subject": "fine.one"}\n{"subject": \n',
            headers={**AUTH, "Content-Type": "application/x-ndjson"},
        )
        per_item_delay = await http.post(
            "/v1/streams/orders/events:batch", json=[{"subject": "x", "delay": 5}]
        )
        too_many = await http.post("/v1/streams/orders/events:batch", json=[good] * 11)
        empty = await http.post("/v1/streams/orders/events:batch", json=[])
        not_json = await http.post(
            "/v1/streams/orders/events:batch",
            content=b"a,b",
            headers={**AUTH, "Content-Type": "text/csv"},
        )
    assert bad_subject.status_code == 422
    assert error_of(bad_subject) == {
        "code": "invalid_subject",
        "message": "subject 'not..valid' has an empty token (leading, trailing or '..')",
        "field": "items[2].subject",
    }
    assert bad_type.status_code == 422
    assert error_of(bad_type)["field"] == "items[1].metadata"
    assert bad_line.status_code == 400
    assert "line 2" in error_of(bad_line)["message"]
    assert per_item_delay.status_code == 422
    assert error_of(per_item_delay)["field"] == "items[0].delay"
    assert "query parameters" in error_of(per_item_delay)["message"]
    assert too_many.status_code == 413
    assert error_of(too_many)["code"] == "batch_too_large"
    assert empty.status_code == 422
    assert error_of(empty)["field"] == "items"
    assert not_json.status_code == 415
    assert await stored(db, "orders") == []


# ---- bad input, limits, reads -------------------------------------------------------------


async def test_bad_input_is_a_4xx_that_names_the_field(
    served: tuple[kanthorq.App, str], db: asyncpg.Connection
) -> None:
    _, base = served
    events = "/v1/streams/orders/events"
    async with client(base) as http:
        answers = {
            "malformed": await http.post(
                events,
                content=b'{"subject": ',
                headers={**AUTH, "Content-Type": "application/json"},
            ),
            "subject": await http.post(events, json={"subject": "has space", "body": 1}),
            "missing": await http.post(events, json={"body": 1}),
            "type": await http.post(events, json={"subject": 7}),
            "unknown": await http.post(events, json={"subject": "a", "colour": "red"}),
            "stream": await http.post("/v1/streams/no-dashes/events", json={"subject": "a"}),
            "metadata": await http.post(
                events, json={"subject": "a", "metadata": {"kanthorq.attempt_base": 1}}
            ),
            "key": await http.post(events, json={"subject": "a", "key": "k" * 300}),
        }
    expected = {
        "malformed": (400, "malformed_json", None),
        "subject": (422, "invalid_subject", "subject"),
        "missing": (422, "missing_field", "subject"),
        "type": (422, "invalid_field", "subject"),
        "unknown": (422, "invalid_field", "colour"),
        "stream": (422, "invalid_name", "stream"),
        "metadata": (422, "invalid_metadata", "metadata"),
        "key": (422, "invalid_key", "key"),
    }
    for name, (status, code, field) in expected.items():
        got = answers[name]
        assert (got.status_code, error_of(got)["code"], error_of(got)["field"]) == (
            status,
            code,
            field,
        ), name
    assert await stored(db, "orders") == []


async def test_a_body_over_the_limit_is_refused_before_it_is_read_whole(
    served: tuple[kanthorq.App, str], db: asyncpg.Connection
) -> None:
    _, base = served
    async with client(base) as http:
        declared = await http.post(
            "/v1/streams/orders/events",
            content=b"{" + b" " * 5000 + b"}",
            headers={**AUTH, "Content-Type": "application/json"},
        )
    assert declared.status_code == 413
    assert error_of(declared)["code"] == "body_too_large"
    assert error_of(declared)["field"] == "body"
    # chunked, without a Content-Length: 8 KiB sent of a body that never ends, and the
    # answer comes while the rest is still to come
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v1/streams/orders/events?subject=big.one HTTP/1.1\r\n"
        b"Host: x\r\nAuthorization: Bearer " + SECRET.encode() + b"\r\n"
        b"Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"400\r\n"
        + b"x" * 1024
        + b"\r\n"
    )
    for _ in range(7):
        writer.write(b"400\r\n" + b"x" * 1024 + b"\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.close()
    assert head.startswith(b"HTTP/1.1 413 ")
    assert await stored(db, "orders") == []


async def test_an_event_body_over_the_apps_maximum_is_413(
    make_app: Callable[..., kanthorq.App],
) -> None:
    kq = make_app(max_body_size=10)
    async with serving(kq) as base, client(base) as http:
        one = await http.post("/v1/streams/s/events", json={"subject": "a", "body": "x" * 20})
        many = await http.post(
            "/v1/streams/s/events:batch", json=[{"subject": "a"}, {"subject": "a", "body": [1] * 9}]
        )
    assert one.status_code == many.status_code == 413
    assert error_of(one)["field"] == "body"
    assert error_of(many)["field"] == "items[1].body"


async def test_reads_answer_404_for_what_does_not_exist(
    served: tuple[kanthorq.App, str],
) -> None:
    _, base = served
    async with client(base) as http:
        await http.post("/v1/streams/orders/events", json={"subject": "a"})
        answers = [
            await http.get("/v1/streams/nowhere/events/event_x"),
            await http.get("/v1/streams/orders/events/event_01nosuchevent"),
            await http.get("/v1/consumers/nobody/tasks/event_x"),
            await http.get("/v1/no/such/path"),
        ]
        wrong_method = await http.delete("/v1/streams/orders/events/event_x")
    codes = [(a.status_code, error_of(a)["code"], error_of(a)["field"]) for a in answers]
    assert codes == [
        (404, "unknown_stream", "stream"),
        (404, "unknown_event", "event_id"),
        (404, "unknown_consumer", "consumer"),
        (404, "not_found", None),
    ]
    assert wrong_method.status_code == 405


async def test_a_tasks_state_is_read_back(
    make_app: Callable[..., kanthorq.App], start_app: Any
) -> None:
    kq = make_app(stream="orders")
    handled = asyncio.Event()

    @kq.subscribe("order.*", consumer="mailer")
    async def mail(msg: kanthorq.Message) -> None:
        handled.set()

    async with serving(kq) as base, client(base) as http:
        await start_app(kq)
        event_id = (
            await http.post("/v1/streams/orders/events", json={"subject": "order.x"})
        ).json()["id"]
        await asyncio.wait_for(handled.wait(), 15)

        async def completed() -> bool:
            got = await http.get(f"/v1/consumers/mailer/tasks/{event_id}")
            return got.status_code == 200 and got.json()["state"] == "completed"

        await wait_until(completed, timeout=15)
        task = (await http.get(f"/v1/consumers/mailer/tasks/{event_id}")).json()
        none = await http.get("/v1/consumers/mailer/tasks/event_01nosuchevent")
    assert task["consumer"] == "mailer"
    assert task["stream"] == "orders"
    assert task["event"]["id"] == event_id
    assert none.status_code == 404
    assert error_of(none)["code"] == "unknown_task"


# ---- tokens -------------------------------------------------------------------------------


async def test_tokens_limit_who_may_publish_and_read_where(
    make_app: Callable[..., kanthorq.App], start_app: Any
) -> None:
    kq = make_app(stream="orders")

    @kq.subscribe("a.>", consumer="billing_worker", stream="billing")
    async def work(msg: kanthorq.Message) -> None:
        return None

    tokens = Tokens(
        [
            Token(SECRET, name="all"),
            Token("orders-only", name="orders", streams=frozenset({"orders"})),
            Token("reader", name="reader", scopes=frozenset({"read"})),
        ]
    )
    async with serving(kq, tokens) as base:
        await start_app(kq)
        async with client(base) as full:
            billing_id = (
                await full.post("/v1/streams/billing/events", json={"subject": "a.b"})
            ).json()["id"]
        async with client(base, {"Authorization": "Bearer orders-only"}) as limited:
            ok = await limited.post("/v1/streams/orders/events", json={"subject": "a.b"})
            other = await limited.post("/v1/streams/billing/events", json={"subject": "a.b"})
            batch = await limited.post("/v1/streams/billing/events:batch", json=[{"subject": "a"}])
            read_other = await limited.get(f"/v1/streams/billing/events/{billing_id}")
            task_other = await limited.get(f"/v1/consumers/billing_worker/tasks/{billing_id}")
        async with client(base, {"Authorization": "Bearer reader"}) as reader:
            read = await reader.get(f"/v1/streams/orders/events/{ok.json()['id']}")
            publish = await reader.post("/v1/streams/orders/events", json={"subject": "a.b"})
        async with client(base, {}) as anonymous:
            none = await anonymous.post("/v1/streams/orders/events", json={"subject": "a.b"})
            spec = await anonymous.get("/v1/openapi.json")
        async with client(base, {"Authorization": "Bearer wrong"}) as wrong:
            bad = await wrong.get(f"/v1/streams/orders/events/{ok.json()['id']}")
        async with client(base, {"Authorization": f"Basic {SECRET}"}) as basic:
            not_bearer = await basic.post("/v1/streams/orders/events", json={"subject": "a.b"})
    assert ok.status_code == 201
    assert read.status_code == 200
    assert spec.status_code == 200
    for refused in (other, batch, read_other, task_other, publish):
        assert refused.status_code == 403, refused.text
        assert error_of(refused)["code"] == "forbidden"
    assert "may not publish on stream 'billing'" in error_of(other)["message"]
    for unknown in (none, bad, not_bearer):
        assert unknown.status_code == 401
        assert unknown.headers["www-authenticate"].startswith("Bearer")


async def test_mounted_in_fastapi_it_opens_the_app_at_the_first_request(
    make_app: Callable[..., kanthorq.App], db: asyncpg.Connection
) -> None:
    from fastapi import FastAPI

    kq = make_app()
    service = FastAPI()
    service.mount("/queue", kanthorq.http.app(kq, tokens=[SECRET]))
    try:
        async with uvicorn_serving(service) as base, client(base) as http:
            published = await http.post(
                "/queue/v1/streams/mounted/events", json={"subject": "m.n", "body": [1]}
            )
            read = await http.get(published.headers["location"])
    finally:
        await kq.close()  # opened by the first request: the mount runs no lifespan
    assert published.status_code == 201
    assert published.headers["location"].startswith("/queue/v1/streams/mounted/events/")
    assert read.status_code == 200
    assert read.json()["body"]["value"] == [1]
    assert len(await stored(db, "mounted")) == 1


def test_the_app_needs_a_token() -> None:
    kq = kanthorq.App("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(kanthorq.errors.ConfigError, match="at least one token"):
        kanthorq.http.app(kq, tokens=[])
    with pytest.raises(kanthorq.errors.ConfigError, match="max_batch"):
        kanthorq.http.app(kq, tokens=["x"], max_batch=0)


def test_a_missing_extra_names_it() -> None:
    with pytest.raises(MissingExtra, match=r"the uvicorn package.*kanthorq\[http\]"), needs("http"):
        raise ImportError("no", name="uvicorn")


# ---- failures -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_database_that_is_down_answers_503_with_retry_after() -> None:
    kq = kanthorq.App(f"postgresql://postgres@127.0.0.1:{free_port()}/none")
    async with serving(kq) as base, client(base) as http:  # it starts all the same
        answers = [
            await http.post("/v1/streams/orders/events", json={"subject": "a.b"}),
            await http.post("/v1/streams/orders/events:batch", json=[{"subject": "a.b"}]),
            await http.get("/v1/streams/orders/events/event_x"),
            await http.get("/v1/consumers/c/tasks/event_x"),
        ]
        bad = await http.post("/v1/streams/orders/events", json={"subject": "a..b"})
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "2"
        assert error_of(answer)["code"] == "database_unavailable"
    assert bad.status_code == 422  # input is checked first, without the database


class Proxy:
    """A TCP proxy to PostgreSQL that the test can cut: it closes its listener and every
    connection, as a database that goes away does, and can listen again on the same port.
    The server is reached as ``dsn`` says: over TCP, or on its Unix socket (the embedded
    server's ``?host=/dir``)."""

    def __init__(self, dsn: str) -> None:
        url = httpx.URL(dsn)
        self.port = free_port()
        self.database = url.path
        self.user = url.username or "postgres"
        socket_dir = url.params.get("host", "")
        port = url.port or 5432
        self.unix = f"{socket_dir}/.s.PGSQL.{port}" if socket_dir.startswith("/") else None
        self.target = (url.host or "127.0.0.1", port)
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.unix is not None:
            up_reader, up_writer = await asyncio.open_unix_connection(self.unix)
        else:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()
        await self.server.wait_closed()


async def test_a_database_that_goes_away_answers_503_and_comes_back(dsn: str) -> None:
    proxy = Proxy(dsn)
    await proxy.start()
    kq = kanthorq.App(f"postgresql://{proxy.user}@127.0.0.1:{proxy.port}{proxy.database}")
    try:
        async with serving(kq) as base, client(base) as http:
            before = await http.post("/v1/streams/away/events", json={"subject": "a.b"})
            await proxy.cut()
            down = await http.post("/v1/streams/away/events", json={"subject": "a.b"})
            read_down = await http.get(f"/v1/streams/away/events/{before.json()['id']}")
            await proxy.start()

            async def back() -> bool:
                answer = await http.post("/v1/streams/away/events", json={"subject": "a.b"})
                return answer.status_code == 201

            await wait_until(back, timeout=15, interval=0.2)
    finally:
        await proxy.cut()
    assert before.status_code == 201
    # surely not written (503), or the connection broke while writing (500 outcome_unknown)
    assert (down.status_code, error_of(down)["code"]) in (
        (503, "database_unavailable"),
        (500, "outcome_unknown"),
    ), down.text
    assert read_down.status_code == 503
    assert read_down.headers["retry-after"] == "2"


async def test_an_unknown_outcome_says_so_and_a_failure_that_wrote_nothing_is_503(
    served: tuple[kanthorq.App, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    kq, base = served

    async def lost(*args: Any, **kwargs: Any) -> Any:
        raise PublishOutcomeUnknown("the connection failed while the event was being written")

    async def refused(*args: Any, **kwargs: Any) -> Any:
        raise NotPublished("the event was not written: no connection or stream")

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    async with client(base) as http:
        monkeypatch.setattr(kq, "publish", lost)
        monkeypatch.setattr(kq, "publish_many", lost)
        unknown = await http.post("/v1/streams/orders/events", json={"subject": "a.b"})
        unknown_batch = await http.post("/v1/streams/orders/events:batch", json=[{"subject": "a"}])
        monkeypatch.setattr(kq, "publish", refused)
        not_written = await http.post("/v1/streams/orders/events", json={"subject": "a.b"})
        monkeypatch.setattr(kq, "publish", broken)
        failed = await http.post("/v1/streams/orders/events", json={"subject": "a.b"})
    for answer in (unknown, unknown_batch):
        assert answer.status_code == 500
        assert error_of(answer)["code"] == "outcome_unknown"
        assert error_of(answer)["may_be_written"] is True
    assert not_written.status_code == 503
    assert "retry-after" in not_written.headers
    assert failed.status_code == 500
    assert error_of(failed)["code"] == "internal_error"


# ---- many clients -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_32_concurrent_clients_post_10000_events_each_stored_once(
    make_app: Callable[..., kanthorq.App], db: asyncpg.Connection
) -> None:
    total, clients = 10_000, 32
    kq = make_app(stream="load", pool_size=10)
    async with serving(kq) as base:

        async def post(first: int) -> list[str]:
            # aiohttp: httpx costs the shared event loop several times more per request
            ids = []
            async with aiohttp.ClientSession(base, headers=AUTH) as http:
                for n in range(first, total, clients):
                    body = {"subject": "load.test", "body": {"n": n}}
                    async with http.post("/v1/streams/load/events", json=body) as r:
                        assert r.status == 201, await r.text()
                        ids.append((await r.json())["id"])
            return ids

        answered = [
            i for ids in await asyncio.gather(*(post(c) for c in range(clients))) for i in ids
        ]
    rows = await stored(db, "load")
    assert len(answered) == len(set(answered)) == total
    assert len(rows) == total
    assert {r["id"] for r in rows} == set(answered)
    assert sorted(msgspec.json.decode(r["body"])["n"] for r in rows) == list(range(total))


# ---- the OpenAPI document, against the answers --------------------------------------------------


def _operation(doc: dict[str, Any], method: str, path: str) -> dict[str, Any] | None:
    for template, operations in doc["paths"].items():
        pattern = "^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path) and method.lower() in operations:
            found: dict[str, Any] = operations[method.lower()]
            return found
    return None


async def test_every_answer_matches_the_openapi_document(
    served: tuple[kanthorq.App, str],
) -> None:
    """Runs after the others (the file's order): every answer they got, checked against the
    schemas the server serves. Run alone, it makes answers of its own first."""
    _, base = served
    async with client(base) as http:
        doc = (await http.get("/v1/openapi.json")).json()
        r = await http.post("/v1/streams/orders/events", json={"subject": "a.b", "body": [1]})
        await http.get(r.headers["location"])
        await http.post("/v1/streams/orders/events", json={"subject": "a..b"})
        await http.post("/v1/streams/orders/events:batch", json=[{"subject": "a.b"}])
    jsonschema.Draft202012Validator.check_schema(doc["components"]["schemas"]["Task"])
    checked = set()
    for method, seen_path, status, body in Answers.seen:
        path = seen_path.removeprefix("/queue")  # mounted in FastAPI (see above)
        if path == "/v1/openapi.json":
            continue
        operation = _operation(doc, method, path)
        if operation is None:  # an unknown path or method: the plain error shape
            schema: dict[str, Any] = {"$ref": "#/components/schemas/Error"}
        else:
            answer = operation["responses"].get(str(status))
            assert answer is not None, f"{method} {path} answered {status}, not in the document"
            schema = answer["content"]["application/json"]["schema"]
        jsonschema.validate(
            body,
            {**schema, "components": doc["components"]},
            cls=jsonschema.Draft202012Validator,
        )
        checked.add((method, status))
    assert {("POST", 201), ("GET", 200), ("POST", 422)} <= checked


# ---- kanthorq serve ----------------------------------------------------------------------------


def test_serve_refuses_to_start_without_a_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KANTHORQ_HTTP_TOKEN", raising=False)
    assert main(["serve", "--dsn", "postgresql://nobody@127.0.0.1:1/none"]) == 2
    assert "needs a token" in capsys.readouterr().err


def test_serve_says_what_is_wrong_in_a_tokens_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("good\nbad scopes=write\n")
    assert main(["serve", "--token-file", str(tokens)]) == 2
    assert "line 2" in capsys.readouterr().err
    assert main(["serve", "--token-file", str(tmp_path / "missing")]) == 2


async def serve_cli(
    dsn: str, *args: str, env: dict[str, str] | None = None
) -> tuple[asyncio.subprocess.Process, str]:
    """``kanthorq serve --dsn DSN ARGS`` in a process of its own, once it answers; its URL."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "kanthorq", "serve", "--dsn", dsn, "--port", str(port)),
        *args,
        env=env,
        cwd=ROOT,
        stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"

    async def up() -> bool:
        try:
            async with httpx.AsyncClient() as probe:
                return (await probe.get(f"{base}/v1/openapi.json")).status_code == 200
        except httpx.TransportError:
            return False

    try:
        await wait_until(up, timeout=30, interval=0.1)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return proc, base


@pytest.mark.timeout(60)
@pytest.mark.parametrize("through_app", [False, True], ids=["dsn", "app"])
async def test_kanthorq_serve_publishes_and_stops_on_sigterm(
    dsn: str, tmp_path: Path, db: asyncpg.Connection, through_app: bool
) -> None:
    """On --dsn, or through the user's app (--app), whose settings it then uses."""
    (tmp_path / "pubapp.py").write_text("import kanthorq\napp = kanthorq.App(max_body_size=100)\n")
    app_args = ["--app", "pubapp:app", "--app-dir", str(tmp_path)] if through_app else []
    tokens = tmp_path / "tokens"
    tokens.write_text("# the tests' tokens\nfile-secret name=ci scopes=publish streams=cli\n")
    env = {**os.environ, "KANTHORQ_HTTP_TOKEN": "env-secret"}
    proc, base = await serve_cli(dsn, "--token-file", str(tokens), *app_args, env=env)
    try:
        async with client(base, {"Authorization": "Bearer file-secret"}) as http:
            published = await http.post("/v1/streams/cli/events", json={"subject": "c.l.i"})
            elsewhere = await http.post("/v1/streams/other/events", json={"subject": "c"})
            big = await http.post(
                "/v1/streams/cli/events", json={"subject": "c", "body": "x" * 200}
            )
        async with client(base, {"Authorization": "Bearer env-secret"}) as http:
            read = await http.get(f"/v1/streams/cli/events/{published.json()['id']}")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 20)
    assert published.status_code == 201
    assert elsewhere.status_code == 403
    assert read.status_code == 200
    assert big.status_code == (413 if through_app else 201)
    assert code == 0
    assert len(await stored(db, "cli")) == (1 if through_app else 2)


@pytest.mark.timeout(60)
async def test_kanthorq_serve_dashboard_shares_the_process_and_the_tokens(
    dsn: str, tmp_path: Path
) -> None:
    """serve --dashboard: the dashboard under /dashboard/, behind the publisher's tokens; a
    token without the admin scope sees it and cannot act."""
    tokens = tmp_path / "tokens"
    tokens.write_text("ops-secret name=ops\npub-secret name=pub scopes=publish,read\n")
    proc, base = await serve_cli(dsn, "--token-file", str(tokens), "--dashboard")
    try:
        async with client(base, {"Authorization": "Bearer pub-secret"}) as http:
            published = await http.post("/v1/streams/shared/events", json={"subject": "s.hared"})
            page = await http.get("/dashboard/")
            act = await http.post("/dashboard/streams/shared/drop", data={"confirm": "shared"})
        async with client(base, {}) as anonymous:
            refused = await anonymous.get("/dashboard/", follow_redirects=False)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 20)
    assert published.status_code == 201
    assert page.status_code == 200
    assert "shared" in page.text  # the stream the publisher just created
    assert act.status_code == 403  # no admin scope
    assert refused.status_code in (303, 401)
    assert code == 0
