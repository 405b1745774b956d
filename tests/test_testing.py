"""kanthorq.testing: message() without a database, drain() on a real one, and the opt-in
pytest plugin, run in a pytest of its own as a user's project would run it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import asyncpg
import msgspec
import pydantic
import pytest

import kanthorq
from kanthorq.errors import ConfigError, InvalidSubject
from kanthorq.testing import NotDrained, databases, drain, message
from tests.conftest import task_table

ROOT = Path(__file__).resolve().parent.parent
AppFactory = Callable[..., kanthorq.App]


class Order(pydantic.BaseModel):
    order_id: int


# ---- message() ----------------------------------------------------------------------------


async def test_message_records_each_settle_and_extend() -> None:
    msg = message("order.paid", {"order_id": 7}, metadata={"source": "test"})
    assert isinstance(msg, kanthorq.Message)
    assert msg.json() == {"order_id": 7}
    assert msg.event.subject == msg.task.subject == "order.paid"
    assert msg.event.metadata == {"source": "test"}
    assert msg.task.attempt_count == 1
    assert msg.task.event_id == msg.event.id
    assert msg.event.id.startswith("event_")

    assert await msg.extend(30) is True
    marker = object()
    assert await msg.ack(conn=marker) is True  # no database: the connection is only recorded
    assert await msg.nack("too late") is False  # only the first settle acts, as for real
    assert await msg.extend(5) is False
    assert msg.acked
    assert not msg.nacked
    assert not msg.cancelled
    assert msg.extended == [30]
    assert [(c.name, c.conn is marker) for c in msg.calls] == [("extend", False), ("ack", True)]


async def test_message_nack_and_cancel() -> None:
    nacked = message("a.b", attempt=3)
    assert await nacked.nack("no stock")
    assert (nacked.nacked, nacked.nack_reason, nacked.task.attempt_count) == (True, "no stock", 3)
    cancelled = message("a.b")
    assert await cancelled.cancel()
    assert cancelled.cancelled
    assert not cancelled.acked
    assert [c.name for c in cancelled.calls] == ["cancel"]


async def test_message_encodes_bodies_as_publish_does() -> None:
    assert message("a.b", Order(order_id=3)).decode(Order) == Order(order_id=3)
    assert message("a.b", b"\x00raw").event.body == b"\x00raw"

    class Point(msgspec.Struct):
        x: int

    assert message("a.b", Point(x=1)).event.body == b'{"x":1}'
    with pytest.raises(InvalidSubject):
        message("not a subject")
    with pytest.raises(ConfigError, match="attempt"):
        message("a.b", attempt=0)


# ---- drain() ------------------------------------------------------------------------------


async def test_drain_reports_completed_retried_discarded_and_errors(
    make_app: AppFactory, db: asyncpg.Connection
) -> None:
    app = make_app()
    discarded: list[BaseException] = []

    async def on_discard(msg: kanthorq.Message, exc: BaseException) -> None:
        discarded.append(exc)

    @app.subscribe("order.*", consumer="c", max_retries=5, on_discard=on_discard)
    async def handle(msg: kanthorq.Message) -> None:
        order = msg.json()["order_id"]
        if order == 2 and msg.task.attempt_count == 1:
            raise kanthorq.Retry(delay=0)  # retried at once: completed within the drain
        if order == 3 and msg.task.attempt_count == 1:
            raise kanthorq.Retry(delay=3600, reason="later")  # retried, but not now
        if order == 4:
            raise kanthorq.Discard("never")
        if order == 5:
            await msg.cancel()

    async with app:
        ids = [await app.publish("order.paid", {"order_id": n}) for n in range(1, 6)]
        later = await app.publish("order.paid", {"order_id": 1}, delay=3600)

    report = await drain(app, timeout=20)

    assert list(report) == ["c"]
    result = report["c"]
    assert result.completed == ids[0:2]
    assert result.retried == [ids[2]]
    assert result.discarded == [ids[3]]
    assert result.cancelled == [ids[4]]
    assert result.scheduled == [later]  # scheduled later: left alone
    assert [(e.event_id, e.attempt) for e in result.errors] == [
        (ids[1], 1),
        (ids[2], 1),
        (ids[3], 1),
    ]
    assert result.errors_of(ids[3])[0].error == "Discard: never"
    assert "Traceback" in (result.errors_of(ids[3])[0].traceback or "")
    assert [str(e) for e in discarded] == ["never"]

    # scheduled=True: the tasks due later run now, retries included
    again = await drain(app, timeout=20, scheduled=True)
    assert sorted(again["c"].completed) == sorted([ids[2], later])
    assert again["c"].errors == []
    table = await task_table(db, "c")
    states = await db.fetch(f"SELECT state FROM {table}")
    assert {r["state"] for r in states} == {101, -102, -101}


async def test_drain_runs_what_handlers_publish_and_names_a_timeout(make_app: AppFactory) -> None:
    app = make_app(shutdown_timeout=0.5)
    release = asyncio.Event()

    @app.subscribe("step.one", consumer="one")
    async def one(msg: kanthorq.Message) -> None:
        await app.publish("step.two", msg.event.body)

    @app.subscribe("step.two", consumer="two")
    async def two(msg: kanthorq.Message) -> None:
        if msg.json() == "stuck":
            await release.wait()

    async with app:
        first = await app.publish("step.one", b'"go"')
    report = await drain(app, timeout=20)
    assert report["one"].completed == [first]
    assert len(report["two"].completed) == 1  # the event the first handler published

    async with app:
        stuck = await app.publish("step.two", b'"stuck"')
    with pytest.raises(NotDrained, match=r"consumer two: 1 tasks running") as info:
        await drain(app, timeout=3)
    assert info.value.left == ["consumer two: 1 tasks running"]
    # the handler that never returned was cancelled at the shutdown, its task handed back
    assert info.value.report["two"].retried == [stuck]
    assert info.value.report["one"].completed == []

    with pytest.raises(ConfigError, match="timeout"):
        await drain(app, timeout=0)
    with pytest.raises(ConfigError, match="unknown consumer"):
        await drain(app, consumers=["nobody"])


# ---- the pytest plugin --------------------------------------------------------------------

USER_TEST = """
import asyncpg
import pytest

import kanthorq
from kanthorq.testing import drain

pytestmark = pytest.mark.asyncio


async def test_a_fresh_database(kanthorq_dsn):
    conn = await asyncpg.connect(kanthorq_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM kanthorq_stream_registry") == 0
        await conn.execute("CREATE TABLE mine (id INT)")  # the next test does not see it
    finally:
        await conn.close()


async def test_another_fresh_database(kanthorq_dsn):
    app = kanthorq.App(kanthorq_dsn)
    seen = []

    @app.subscribe("a.b", consumer="c")
    async def handle(msg: kanthorq.Message) -> None:
        seen.append(msg.json())

    async with app:
        assert await app.pool.fetchval("SELECT to_regclass('mine')") is None
        await app.publish("a.b", {"n": 1})
    report = await drain(app)
    assert len(report["c"].completed) == 1 and seen == [{"n": 1}]
"""


def _pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest in a project of its own (no kanthorq settings), as a user runs it."""
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
    )
    (tmp_path / "test_user.py").write_text(textwrap.dedent(USER_TEST))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
async def test_the_plugin_is_opt_in(tmp_path: Path) -> None:
    off = await asyncio.to_thread(_pytest, tmp_path)
    assert off.returncode == 1, off.stdout + off.stderr
    assert "fixture 'kanthorq_dsn' not found" in off.stdout

    on = await asyncio.to_thread(_pytest, tmp_path, "-o", "kanthorq_testing=true")
    assert on.returncode == 0, on.stdout + on.stderr
    assert "2 passed" in on.stdout

    by_name = await asyncio.to_thread(_pytest, tmp_path, "-p", "kanthorq.testing.fixtures")
    assert by_name.returncode == 0, by_name.stdout + by_name.stderr


def test_database_names_in_dsns_with_a_socket_folder() -> None:
    # the embedded server's DSN names its socket folder in the query string
    embedded = "postgresql://postgres:@/postgres?host=/tmp/kq/pgdata"
    copy = databases.with_database(embedded, "kq_t_1")
    assert copy == "postgresql://postgres:@/kq_t_1?host=/tmp/kq/pgdata"
    assert databases.database_of(copy) == "kq_t_1"
    assert databases.database_of("postgresql://u@h:5432/db") == "db"
