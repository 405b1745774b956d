"""Item 10: hostile stream and consumer names, and hostile subjects.

Each one is refused with a clear error before any SQL runs, or stored safely: the only
objects that appear are the expected kanthorq tables, and the listener listens on exactly
the expected channels.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

import kanthorq
from kanthorq.errors import InvalidName, InvalidSubject
from kanthorq.publisher import channel
from tests.conftest import Running, stream_table, task_table, wait_until

Starter = Callable[..., Awaitable[Running]]

REFUSED_NAMES = [
    'orders"; DROP TABLE x;--',
    "x'); --",
    "a" * 64,
    "\u043erders",  # Cyrillic o
    "\uff4frders",  # fullwidth o
    "orders\u200b",  # zero-width space
    "stra\u00dfe",
    "\u0130stanbul",
    "orders\n",
    "",
    " orders",
    "_orders",
    "orders_",
    "a__b",
    "a-b",
    "a.b",
    "a$1",
    "kanthorq_stream_registry; --",
]
# valid, so stored: they never become identifiers (tables are named from ids)
ACCEPTED_NAMES = ["select", "a" * 63, "DROP", "pg_catalog", "kanthorq_stream_registry", "x"]

REFUSED_SUBJECTS = ["", ".a", "a.", "a..b", " a", "\x00", "a" * 300, "a b", "a.*", "a.>", "\ud800"]
# valid subjects full of SQL and regular-expression syntax: stored and matched literally
ODD_SUBJECTS = [
    "a.';DROP_TABLE_x;--",
    'a."quoted"',
    "a.$1",
    "a.\\",
    "a.(b|c)",
    "a.[x]",
    "a.%_",
    "a.^$",
    "a.b+",
    "\u00e9.\u65e5\u672c",
]
NAME_OK = re.compile(r"[A-Za-z0-9]+(_[A-Za-z0-9]+)*")


async def objects(db: asyncpg.Connection) -> set[str]:
    rows = await db.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
    )
    return {r["relname"] for r in rows}


def test_the_names_are_classified_as_the_grammar_says() -> None:
    for name in REFUSED_NAMES:
        assert not (NAME_OK.fullmatch(name) and name.isascii() and len(name) <= 63), name
    for name in ACCEPTED_NAMES:
        assert NAME_OK.fullmatch(name), name


async def test_hostile_names_are_refused_before_any_sql(dsn: str, db: asyncpg.Connection) -> None:
    await db.execute("CREATE TABLE x (id INT)")
    app = kanthorq.App(dsn)
    async with app:
        before = await objects(db)
        registry = await db.fetchval("SELECT count(*) FROM kanthorq_stream_registry")
        for name in REFUSED_NAMES:
            with pytest.raises(InvalidName, match="name"):
                await app.publish("a.b", b"", stream=name)
            with pytest.raises(InvalidName, match="name"):
                await app.publish_many([("a.b", b"")], stream=name)
            with pytest.raises(InvalidName, match="consumer name"):
                app.subscribe("a.b", consumer=name)(_noop)
            with pytest.raises(InvalidName, match="stream name"):
                app.subscribe("a.b", consumer="c", stream=name)(_noop)
            with pytest.raises(InvalidName, match="stream name"):
                kanthorq.App(dsn, stream=name)
        assert await objects(db) == before
        assert await db.fetchval("SELECT count(*) FROM kanthorq_stream_registry") == registry
        assert app.subscriptions == {}


async def test_odd_but_valid_names_are_stored_safely(
    dsn: str, db: asyncpg.Connection, start_app: Starter
) -> None:
    await db.execute("CREATE TABLE x (id INT)")
    before = await objects(db)
    app = kanthorq.App(dsn, poll_interval=0.5)
    seen: dict[str, list[str]] = {}
    for name in ACCEPTED_NAMES:
        seen[name] = []

        async def handle(msg: kanthorq.Message, name: str = name) -> None:
            seen[name].append(msg.event.id)

        app.subscribe("a.>", consumer=name, stream=name)(handle)
    running = await start_app(app)
    published = {name: await app.publish("a.b", b"hi", stream=name) for name in ACCEPTED_NAMES}
    await wait_until(lambda: all(seen[n] == [published[n]] for n in ACCEPTED_NAMES), timeout=15)

    streams = dict(await db.fetch("SELECT name, id FROM kanthorq_stream_registry"))
    consumers = dict(await db.fetch("SELECT name, id FROM kanthorq_consumer_registry"))
    assert set(streams) == set(consumers) == set(ACCEPTED_NAMES)
    new = await objects(db) - before
    tables = {f"kanthorq_{i}" for i in [*streams.values(), *consumers.values()]}
    assert tables <= new
    # the rest are the indexes of those tables, named after them
    assert all(any(obj.startswith(t) for t in tables) for obj in new), new - tables
    assert "x" in await objects(db)
    for name in ACCEPTED_NAMES:  # the name is data, kept exactly
        table = await stream_table(db, name)
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 1

    listener = running.app.listener
    assert listener is not None
    assert listener.connection is not None
    listening = {r[0] for r in await listener.connection.fetch("SELECT pg_listening_channels()")}
    assert listening == {channel(i) for i in streams.values()}


async def test_hostile_subjects_are_refused(dsn: str, db: asyncpg.Connection) -> None:
    app = kanthorq.App(dsn)
    async with app:
        await app.publish("a.b", b"")  # the stream exists: only the events could change
        events = await stream_table(db)
        before = await objects(db)
        for subject in REFUSED_SUBJECTS:
            with pytest.raises(InvalidSubject, match="subject"):
                await app.publish(subject, b"")
            with pytest.raises(InvalidSubject, match="subject"):
                await app.publish_many([("a.b", b""), (subject, b"")])  # all or nothing
            with pytest.raises(InvalidSubject):
                await app.publish_many([kanthorq.Event(subject=subject, body=b"")])
        for pattern in ["", ".a", "a.", "a..b", " a", "\x00", "a" * 300, "a.>.b", "a*"]:
            with pytest.raises(InvalidSubject, match="filter"):
                app.subscribe(pattern, consumer="c")(_noop)
            with pytest.raises(InvalidSubject, match="filter"):
                app.subscribe("a.b", consumer="c", exclude=pattern)(_noop)
        assert await db.fetchval(f"SELECT count(*) FROM {events}") == 1
        assert await objects(db) == before


async def test_odd_subjects_are_stored_and_matched_literally(
    dsn: str, db: asyncpg.Connection, start_app: Starter
) -> None:
    await db.execute("CREATE TABLE x (id INT)")
    app = kanthorq.App(dsn, poll_interval=0.5)
    got: dict[str, list[str]] = {"every": [], "literal": []}

    @app.subscribe(">", consumer="every")
    async def every(msg: kanthorq.Message) -> None:
        got["every"].append(msg.event.subject)

    @app.subscribe(["a.(b|c)", "a.[x]", "a.b+", "a.%_", "a.^$"], consumer="literal")
    async def literal(msg: kanthorq.Message) -> None:
        got["literal"].append(msg.event.subject)

    await start_app(app)
    for subject in [*ODD_SUBJECTS, "a.b", "a.c", "a.x", "a.bb", "a.%x", "a.a"]:
        await app.publish(subject, b"")
    await wait_until(lambda: len(got["every"]) == len(ODD_SUBJECTS) + 6, timeout=15)
    assert sorted(got["every"]) == sorted(
        [*ODD_SUBJECTS, "a.b", "a.c", "a.x", "a.bb", "a.%x", "a.a"]
    )
    # only the literal subjects, none of what the filters would match as regular expressions;
    # a last event, converted after all the others (one transaction each), ends the wait
    last = await app.publish("a.[x]", b"last")
    tasks = await task_table(db, "literal")
    await wait_until(
        lambda: _count(db, f"SELECT count(*) FROM {tasks} WHERE event_id = $1", last), timeout=10
    )
    subjects = [r[0] for r in await db.fetch(f"SELECT subject FROM {tasks}")]
    assert sorted(subjects) == sorted(["a.(b|c)", "a.[x]", "a.[x]", "a.b+", "a.%_", "a.^$"])
    assert "x" in await objects(db)
    table = await stream_table(db)
    stored = {r[0] for r in await db.fetch(f"SELECT subject FROM {table}")}
    assert set(ODD_SUBJECTS) <= stored


async def _noop(msg: kanthorq.Message) -> None:
    return None


async def _count(db: asyncpg.Connection, sql: str, *args: object) -> int:
    return int(await db.fetchval(sql, *args))
