"""The examples, run against the test's database.

The web services publish inside their own transaction: after a 2xx both the row and the
event exist; when the publish fails after the insert (413) or the insert fails (409),
neither does. The quickstart runs its whole demo: events flow, one task of each consumer is
retried and completed, one is discarded, and every task ends completed or discarded. The
testing example (examples/test_shop.py) runs in a pytest of its own, as its docstring says.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

import kanthorq
from examples import aiohttp_app, fastapi_app, quickstart, shop
from tests.conftest import stream_table, task_states, task_table

TOO_LARGE = "x" * (fastapi_app.MAX_BODY_SIZE + 1)
ROOT = Path(__file__).resolve().parent.parent
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]


class Response(msgspec.Struct):
    status: int
    body: Any


Post = Callable[[int, dict[str, Any]], Awaitable[Response]]


@asynccontextmanager
async def fastapi_client(dsn: str) -> AsyncIterator[Post]:
    api = fastapi_app.create_app(dsn)
    # ASGITransport does not run the lifespan: enter it here, as a server would
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://test") as c,
    ):

        async def post(order_id: int, body: dict[str, Any]) -> Response:
            r = await c.post(f"/orders/{order_id}/cancel", json=body)
            return Response(r.status_code, r.json())

        yield post


@asynccontextmanager
async def aiohttp_client(dsn: str) -> AsyncIterator[Post]:
    async with TestClient(TestServer(aiohttp_app.create_app(dsn))) as c:

        async def post(order_id: int, body: dict[str, Any]) -> Response:
            r = await c.post(f"/orders/{order_id}/cancel", json=body)
            is_json = r.content_type == "application/json"
            return Response(r.status, await r.json() if is_json else await r.text())

        yield post


CLIENTS: dict[str, Callable[[str], AbstractAsyncContextManager[Post]]] = {
    "fastapi": fastapi_client,
    "aiohttp": aiohttp_client,
}


async def events(db: asyncpg.Connection) -> list[asyncpg.Record]:
    table = await stream_table(db)
    return await db.fetch(f"SELECT id, subject, body FROM {table} ORDER BY id")


async def cancellations(db: asyncpg.Connection) -> list[int]:
    rows = await db.fetch("SELECT order_id FROM order_cancellations ORDER BY order_id")
    return [row["order_id"] for row in rows]


@pytest.mark.parametrize("framework", list(CLIENTS))
async def test_endpoint_commits_row_and_event_together(
    framework: str, dsn: str, db: asyncpg.Connection
) -> None:
    async with CLIENTS[framework](dsn) as post:
        ok = await post(7, {"reason": "too late"})
        assert ok.status == 201, ok.body
        assert await cancellations(db) == [7]
        [event] = await events(db)
        assert ok.body == {"order_id": 7, "event_id": event["id"]}
        assert event["subject"] == "order.cancelled"
        assert msgspec.json.decode(event["body"]) == {
            "order_id": 7,
            "reason": "too late",
            "note": "",
        }

        # the publish fails after the insert: the transaction takes the row back with it
        too_large = await post(8, {"reason": "too late", "note": TOO_LARGE})
        assert too_large.status == 413, too_large.body
        assert await cancellations(db) == [7]
        assert len(await events(db)) == 1

        # the insert fails: no event either
        again = await post(7, {"reason": "twice"})
        assert again.status == 409, again.body
        assert await cancellations(db) == [7]
        assert len(await events(db)) == 1


async def test_quickstart_shows_events_a_retry_and_a_discard(
    dsn: str, db: asyncpg.Connection
) -> None:
    lines: list[str] = []
    tally = quickstart.Tally(echo=lines.append)
    app = quickstart.create_app(dsn, tally=tally, poll_interval=0.5)

    await quickstart.demo(app, tally)  # returns once every task is completed or discarded

    orders = len(quickstart.ORDERS)
    assert len(await events(db)) == orders
    for consumer in ("email", "refund"):
        states = await task_states(db, consumer)
        assert set(states) == {kanthorq.TaskState.COMPLETED, kanthorq.TaskState.DISCARDED}
        assert sum(states.values()) == orders
        table = await task_table(db, consumer)
        retried = await db.fetchval(
            f"SELECT count(*) FROM {table} WHERE state = $1 AND attempt_count > 1",
            kanthorq.TaskState.COMPLETED,
        )
        assert retried >= 1, f"{consumer}: no task was retried and then completed"
    # email: order 5 used up 4 attempts; refund: order 4 was discarded by the handler
    assert await task_states(db, "email") == {101: orders - 1, -102: 1}
    assert tally.discarded == {"email": 1, "refund": 1}
    assert tally.completed == {"email": orders - 1, "refund": orders - 1}
    assert tally.retried["email"] >= 1
    assert any("will retry" in line for line in lines)
    assert sum("DISCARDED" in line for line in lines) == 2
    summary = tally.summary(app.subscriptions)
    assert "email   5 completed, 1 discarded" in summary


def test_examples_default_to_the_environment() -> None:
    # importing builds the module-level apps without connecting anywhere
    assert isinstance(quickstart.app, kanthorq.App)
    assert set(quickstart.app.subscriptions) == {"email", "refund"}
    # no DSN written into the examples: $KANTHORQ_DSN, else (None) the embedded server
    expected = os.environ.get("KANTHORQ_DSN") or None
    assert quickstart.app.dsn == expected
    assert fastapi_app.api.state.queue.dsn == expected
    assert shop.app.dsn == expected
    assert set(shop.app.subscriptions) == {"invoice", "receipt", "review"}


def _pytest_the_testing_example() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PYTEST, "-o", "kanthorq_testing=true", "examples/test_shop.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
async def test_the_testing_example_passes() -> None:
    # as its docstring says to run it: pytest, with kanthorq's plugin turned on for the run
    result = await asyncio.to_thread(_pytest_the_testing_example)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout
