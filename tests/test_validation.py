"""Bad input is refused before any SQL runs, with a KanthorQError subclass naming it.

"Before any SQL" is shown on an open app: after each refused call the database has the
same kanthorq tables, registry rows and events as before. The refusals share one database
and one app (module fixtures), so the many cases stay fast.
"""

from __future__ import annotations

import functools
import math
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

import kanthorq
from kanthorq import database
from kanthorq.errors import (
    ConfigError,
    ConnectionFailed,
    InvalidName,
    InvalidPayload,
    InvalidSubject,
    KanthorQError,
)
from kanthorq.testing.databases import fresh_database

Snapshot = tuple[list[str], list[str], list[str], int]


@pytest.fixture(scope="module")
async def shared_dsn(server_dsn: str, template_db: str) -> AsyncIterator[str]:
    async with fresh_database(server_dsn, template_db) as url:
        yield url


@pytest.fixture(scope="module")
async def db(shared_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(shared_dsn)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def app(shared_dsn: str) -> AsyncIterator[kanthorq.App]:
    async with kanthorq.App(shared_dsn, pool_size=2) as opened:
        yield opened


async def snapshot(db: asyncpg.Connection) -> Snapshot:
    """Every kanthorq table, stream and consumer in the database."""
    tables = await db.fetch(
        "SELECT tablename FROM pg_tables WHERE tablename LIKE 'kanthorq%' ORDER BY 1"
    )
    streams = await db.fetch("SELECT name FROM kanthorq_stream_registry ORDER BY 1")
    consumers = await db.fetch("SELECT name FROM kanthorq_consumer_registry ORDER BY 1")
    return (
        [r["tablename"] for r in tables],
        [r["name"] for r in streams],
        [r["name"] for r in consumers],
        await event_count(db),
    )


async def event_count(db: asyncpg.Connection) -> int:
    total = 0
    for row in await db.fetch("SELECT id FROM kanthorq_stream_registry"):
        total += await db.fetchval(f'SELECT count(*) FROM "kanthorq_{row["id"]}"')
    return int(total)


async def handler(msg: kanthorq.Message) -> None:
    pass


# ---- subjects ----------------------------------------------------------------------

BAD_SUBJECTS = ["", "a..b", "a.", ".a", " a", "a b", "\x00", "a" * 300, "a.*", "a.>", "*", ">"]


@pytest.mark.parametrize("subject", BAD_SUBJECTS)
async def test_publish_refuses_bad_subjects(
    app: kanthorq.App, db: asyncpg.Connection, subject: str
) -> None:
    before = await snapshot(db)
    with pytest.raises(InvalidSubject):
        await app.publish(subject, b"x")
    with pytest.raises(InvalidSubject):
        await app.publish_many([("ok.subject", b"1"), (subject, b"2")], stream="other")
    with pytest.raises(InvalidSubject):
        await app.publish_many([kanthorq.Event(subject=subject)])
    assert await snapshot(db) == before


@pytest.mark.parametrize("subject", [None, 42, b"a.b"])
async def test_publish_refuses_subjects_that_are_not_str(
    app: kanthorq.App, db: asyncpg.Connection, subject: Any
) -> None:
    before = await snapshot(db)
    with pytest.raises(InvalidSubject, match="must be a str"):
        await app.publish(subject, b"x")
    assert await snapshot(db) == before


@pytest.mark.parametrize("pattern", ["", "a..b", "a.>.b", "a*", "a b"])
def test_subscribe_refuses_bad_filters(pattern: str) -> None:
    app = kanthorq.App("postgresql://localhost/x")
    with pytest.raises(InvalidSubject):
        app.subscribe(pattern)(handler)
    with pytest.raises(InvalidSubject):
        app.subscribe("ok.>", exclude=[pattern])(handler)
    with pytest.raises(InvalidSubject):
        app.subscribe(["ok.>", pattern])(handler)
    assert app.subscriptions == {}


def test_subscribe_needs_a_filter() -> None:
    app = kanthorq.App("postgresql://localhost/x")
    with pytest.raises(KanthorQError, match="at least one subject"):
        app.subscribe([])(handler)


# ---- names ---------------------------------------------------------------------------

BAD_NAMES = [
    "",
    'orders"; DROP TABLE x;--',
    "x'); --",
    "orders; DROP TABLE kanthorq_stream_registry",
    "a" * 64,
    "a" * 300,
    "\u043erders",  # Cyrillic o
    "\uff4frders",  # fullwidth o
    "orders\u200b",  # zero-width space
    "ord\u0435rs",  # Cyrillic e
    "_orders",
    "orders_",
    "ord__ers",
    "ord-ers",
    "ord.ers",
    "ord ers",
    "orders\n",
    "\x00",
    "orders%",
    "kanthorq_stream_registry\x00",
]
GOOD_NAMES = ["a", "orders", "order_events", "A1_b2_C3", "a" * 63, "0"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_app_refuses_bad_default_stream(name: str) -> None:
    with pytest.raises(InvalidName, match="stream name"):
        kanthorq.App("postgresql://localhost/x", stream=name)


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_publish_refuses_bad_stream_names(
    app: kanthorq.App, db: asyncpg.Connection, name: str
) -> None:
    before = await snapshot(db)
    with pytest.raises(InvalidName, match="stream name"):
        await app.publish("a.b", b"x", stream=name)
    with pytest.raises(InvalidName, match="stream name"):
        await app.publish_many([("a.b", b"x")], stream=name)
    with pytest.raises(InvalidName, match="stream name"):
        await app.publish_many([], stream=name)
    assert await snapshot(db) == before
    assert await event_count(db) == 0


@pytest.mark.parametrize("name", BAD_NAMES)
def test_subscribe_refuses_bad_names(name: str) -> None:
    app = kanthorq.App("postgresql://localhost/x")
    with pytest.raises(InvalidName, match="consumer name"):
        app.subscribe("a.b", consumer=name)(handler)
    with pytest.raises(InvalidName, match="stream name"):
        app.subscribe("a.b", consumer="ok", stream=name)(handler)
    assert app.subscriptions == {}


@pytest.mark.parametrize("name", [None, 1, b"orders", ["orders"]])
def test_names_must_be_str(name: Any) -> None:
    with pytest.raises(InvalidName, match="must be a str"):
        kanthorq.App("postgresql://localhost/x", stream=name)
    app = kanthorq.App("postgresql://localhost/x")
    with pytest.raises(InvalidName, match="must be a str"):
        app.subscribe("a", consumer=name or 1)(handler)


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_names(name: str) -> None:
    app = kanthorq.App("postgresql://localhost/x", stream=name)
    app.subscribe("a.b", consumer=name, stream=name)(handler)
    sub = app.subscriptions[name]
    assert (sub.name, sub.stream) == (name, name)


def test_consumer_name_defaults_to_the_handler_name() -> None:
    app = kanthorq.App("postgresql://localhost/x", stream="orders")
    app.subscribe("a.b")(handler)
    assert app.subscriptions["handler"].stream == "orders"


# ---- handlers and subscription options -----------------------------------------------


def sync_handler(msg: kanthorq.Message) -> None:
    pass


async def async_gen_handler(msg: kanthorq.Message) -> Any:
    yield None


class CallableObject:
    async def __call__(self, msg: kanthorq.Message) -> None:
        pass


@pytest.mark.parametrize(
    "fn",
    [sync_handler, lambda msg: None, async_gen_handler, print, CallableObject(), "handler"],
    ids=["def", "lambda", "async-generator", "builtin", "callable-object", "str"],
)
def test_subscribe_refuses_non_async_handlers(fn: Any) -> None:
    app = kanthorq.App("postgresql://localhost/x")
    with pytest.raises(ConfigError, match="async def"):
        app.subscribe("a.b", consumer="c")(fn)
    assert app.subscriptions == {}


def test_subscribe_refuses_handlers_with_the_wrong_arity() -> None:
    async def two(a: kanthorq.Message, b: int) -> None:
        pass

    async def none() -> None:
        pass

    app = kanthorq.App("postgresql://localhost/x")
    for fn in (two, none):
        with pytest.raises(ConfigError, match="exactly one argument"):
            app.subscribe("a.b")(fn)


def test_duplicate_consumer_names_are_refused() -> None:
    app = kanthorq.App("postgresql://localhost/x")

    @app.subscribe("a.b", consumer="email")
    async def first(msg: kanthorq.Message) -> None:
        pass

    with pytest.raises(ConfigError, match="'email' is already subscribed"):

        @app.subscribe("c.d", consumer="email")
        async def second(msg: kanthorq.Message) -> None:
            pass

    app.subscribe("c.d")(first)  # a second consumer, named after the function
    with pytest.raises(ConfigError, match="'first' is already subscribed"):
        app.subscribe("e.f")(first)
    assert list(app.subscriptions) == ["email", "first"]


def test_handlers_without_a_name_need_a_consumer_name() -> None:
    async def takes_two(extra: int, msg: kanthorq.Message) -> None:
        pass

    app = kanthorq.App("postgresql://localhost/x")
    with pytest.raises(ConfigError, match="consumer="):
        app.subscribe("a.b")(functools.partial(takes_two, 1))
    app.subscribe("a.b", consumer="partial")(functools.partial(takes_two, 1))
    assert app.subscriptions["partial"].decode_as is None


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_retries", -1),
        ("max_retries", -100),
        ("max_retries", 1.5),
        ("max_retries", "3"),
        ("max_retries", None),
        ("max_retries", True),
        ("max_retries", 10**6),
        ("concurrency", 0),
        ("concurrency", -1),
        ("concurrency", 2.0),
        ("visibility_timeout", 0),
        ("visibility_timeout", -1),
        ("visibility_timeout", math.nan),
        ("visibility_timeout", math.inf),
        ("visibility_timeout", 1e300),
        ("visibility_timeout", 10**400),
        ("visibility_timeout", "60"),
        ("backoff", 5),
        ("on_discard", sync_handler),
    ],
    ids=repr,
)
def test_subscribe_refuses_bad_options(option: str, value: object) -> None:
    app = kanthorq.App("postgresql://localhost/x")
    with pytest.raises(ConfigError, match=option):
        app.subscribe("a.b", consumer="c", **{option: value})(handler)
    assert app.subscriptions == {}


def test_max_retries_counts_attempts() -> None:
    app = kanthorq.App("postgresql://localhost/x")
    app.subscribe("a.b", consumer="c", max_retries=0)(handler)
    app.subscribe("a.b", consumer="d", max_retries=3)(handler)
    assert app.subscriptions["c"].spec().attempt_max == 1
    assert app.subscriptions["d"].spec().attempt_max == 4


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("pool_size", 0),
        ("pool_size", 2.5),
        ("statement_cache_size", -1),
        ("max_body_size", -1),
        ("max_body_size", "1MB"),
        ("poll_interval", 0),
        ("poll_interval", math.nan),
        ("poll_interval", math.inf),
        ("shutdown_timeout", -1),
        ("shutdown_timeout", math.inf),
        ("shutdown_timeout", math.nan),
    ],
    ids=repr,
)
def test_app_refuses_bad_options(option: str, value: object) -> None:
    with pytest.raises(ConfigError, match=option):
        kanthorq.App("postgresql://localhost/x", **{option: value})


# ---- metadata and bodies ---------------------------------------------------------------


def deep(levels: int, container: str) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"k": value} if container == "dict" else [value]
    return value


BAD_METADATA: list[tuple[str, object, str]] = [
    ("list", ["a", "b"], "must be a dict"),
    ("str", '{"a": 1}', "must be a dict"),
    ("bytes", b"{}", "must be a dict"),
    ("int", 1, "must be a dict"),
    ("nan", {"x": math.nan}, "nan"),
    ("inf", {"x": [1, -math.inf]}, "inf"),
    ("nul-value", {"x": "a\x00b"}, "NUL"),
    ("nul-key", {"a\x00": 1}, "NUL"),
    ("surrogate-value", {"x": "\ud800"}, "surrogate"),
    ("surrogate-key", {"\udfff": 1}, "surrogate"),
    ("deep-dict", {"x": deep(10_000, "dict")}, "nested deeper"),
    ("deep-list", {"x": deep(10_000, "list")}, "nested deeper"),
    ("int-key", {1: "a"}, "not a str"),
    ("object", {"x": object()}, "object"),
    ("set", {"x": {1, 2}}, "set"),
    ("bytes-value", {"x": b"a"}, "bytes"),
]


@pytest.mark.parametrize(
    ("metadata", "message"),
    [(m, msg) for _, m, msg in BAD_METADATA],
    ids=[n for n, _, _ in BAD_METADATA],
)
async def test_publish_refuses_bad_metadata(
    app: kanthorq.App, db: asyncpg.Connection, metadata: Any, message: str
) -> None:
    before = await snapshot(db)
    with pytest.raises(InvalidPayload, match=message):
        await app.publish("a.b", b"x", metadata=metadata, stream="fresh")
    with pytest.raises(InvalidPayload, match=message):
        await app.publish_many([("a.b", b"x", metadata)], stream="fresh")
    with pytest.raises(InvalidPayload, match=message):
        await app.publish_many([("a.b", b"y"), ("a.c", b"x", metadata)])
    assert await snapshot(db) == before


async def test_metadata_at_the_nesting_limit_is_stored(
    app: kanthorq.App, db: asyncpg.Connection
) -> None:
    before = await event_count(db)
    await app.publish("a.b", b"x", metadata={"x": deep(31, "dict")})
    assert await event_count(db) == before + 1


class Unencodable:
    pass


@pytest.mark.parametrize(
    "body",
    [object(), Unencodable(), {1j: 2}, {"x": object()}, deep(10_000, "list"), "\ud800"],
    ids=["object", "class", "complex-key", "nested-object", "deep", "surrogate"],
)
async def test_publish_refuses_bodies_msgspec_cannot_encode(
    app: kanthorq.App, db: asyncpg.Connection, body: object
) -> None:
    before = await snapshot(db)
    with pytest.raises(InvalidPayload, match="cannot be encoded"):
        await app.publish("a.b", body, stream="fresh")
    with pytest.raises(InvalidPayload, match="cannot be encoded"):
        await app.publish_many([("a.b", b"ok"), ("a.b", body)], stream="fresh")
    assert await snapshot(db) == before


async def test_publish_refuses_bodies_over_max_body_size(
    shared_dsn: str, db: asyncpg.Connection
) -> None:
    async with kanthorq.App(shared_dsn, max_body_size=10, pool_size=1) as small:
        before = await snapshot(db)
        with pytest.raises(kanthorq.PayloadTooLarge, match="11 bytes"):
            await small.publish("a.b", b"x" * 11, stream="fresh")
        with pytest.raises(kanthorq.PayloadTooLarge):
            await small.publish("a.b", {"key": "0123456789"}, stream="fresh")
        with pytest.raises(kanthorq.PayloadTooLarge):
            await small.publish_many([("a.b", b"ok"), ("a.b", b"y" * 100)], stream="fresh")
        with pytest.raises(kanthorq.PayloadTooLarge):
            await small.publish_many([kanthorq.Event(subject="a.b", body=b"z" * 11)])
        assert await snapshot(db) == before
        # exactly the maximum is fine
        await small.publish("a.b", b"x" * 10)
    assert await event_count(db) == before[3] + 1
    assert issubclass(kanthorq.PayloadTooLarge, KanthorQError)


@pytest.mark.parametrize(
    "item",
    [["a.b", b"x"], ("a.b",), ("a.b", b"x", {}, "extra"), "a.b", None, {"subject": "a.b"}],
    ids=repr,
)
async def test_publish_many_refuses_bad_items(
    app: kanthorq.App, db: asyncpg.Connection, item: Any
) -> None:
    before = await snapshot(db)
    with pytest.raises(InvalidPayload, match="publish_many items"):
        await app.publish_many([("a.b", b"ok"), item], stream="fresh")
    assert await snapshot(db) == before


async def test_publish_many_refuses_events_with_an_id(
    app: kanthorq.App, db: asyncpg.Connection
) -> None:
    before = await snapshot(db)
    with pytest.raises(InvalidPayload, match="without an id"):
        await app.publish_many([kanthorq.Event(subject="a.b", id="event_x")], stream="fresh")
    assert await snapshot(db) == before


async def test_publishing_before_open_is_refused() -> None:
    app = kanthorq.App("postgresql://localhost/x")
    with pytest.raises(kanthorq.KanthorQError, match="not open"):
        await app.publish("a.b", b"x")


# ---- DSNs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dsn",
    [
        "mysql://user@localhost/db",
        "localhost:5432",
        "http://localhost/x",
        "postgresql://localhost:99999/x",
        "postgresql://localhost:port/x",
        "",
        "   ",
    ],
)
def test_malformed_dsn_is_a_config_error(dsn: str) -> None:
    with pytest.raises(ConfigError, match="DSN"):
        kanthorq.App(dsn)


@pytest.mark.parametrize(
    "dsn",
    [
        "//kq:hunter2secret@localhost/db",
        "kq:hunter2secret@localhost/db",
        "mysql://kq:hunter2secret@localhost/db",
        "postgresql://kq:hunter2secret@localhost:abc/db",
        "postgresql://kq:hunter2secret@[::1/db",
    ],
)
def test_malformed_dsn_error_does_not_show_the_password(dsn: str) -> None:
    with pytest.raises(ConfigError, match="DSN") as info:
        kanthorq.App(dsn)
    assert "hunter2secret" not in str(info.value)


@pytest.mark.parametrize("dsn", [123, b"postgresql://localhost/x"])
def test_dsn_must_be_a_str(dsn: Any) -> None:
    with pytest.raises(ConfigError, match="DSN"):
        kanthorq.App(dsn)


async def test_malformed_dsn_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KANTHORQ_DSN", "mysql://user@localhost/db")
    app = kanthorq.App()  # checked when it opens, so `kanthorq run --dsn` can replace it
    with pytest.raises(ConfigError, match="postgresql://"):
        await app.open()


@pytest.mark.parametrize(
    ("dsn", "named"),
    [
        ("postgresql://kq:hunter2secret@127.0.0.1:1/db", "127.0.0.1:1"),
        ("postgresql://kq@kanthorq-no-such-host.invalid:5432/db", "kanthorq-no-such-host.invalid"),
    ],
)
async def test_dsn_that_does_not_connect(dsn: str, named: str) -> None:
    app = kanthorq.App(dsn)
    with pytest.raises(ConnectionFailed) as info:
        async with app:
            pass
    message = str(info.value)
    assert named in message
    assert "hunter2secret" not in message
    assert isinstance(info.value, KanthorQError)
    # the app can be tried again, and fails the same way
    with pytest.raises(ConnectionFailed):
        await app.open()
    with pytest.raises(kanthorq.KanthorQError, match="not open"):
        await app.publish("a.b", b"x")

    with pytest.raises(ConnectionFailed, match=named):
        await database.connect(database.parse_dsn(dsn), timeout=5)


async def test_publishing_after_close_is_refused(shared_dsn: str, db: asyncpg.Connection) -> None:
    app = kanthorq.App(shared_dsn, pool_size=1)
    async with app:
        await app.publish("a.b", b"x", stream="closing")
    before = await snapshot(db)
    with pytest.raises(kanthorq.KanthorQError, match="not open"):
        await app.publish("a.b", b"x", stream="closing")
    with pytest.raises(kanthorq.KanthorQError, match="not open"):
        await app.publish_many([("a.b", b"x")], stream="closing")
    assert await snapshot(db) == before
    # and it can be opened again
    async with app:
        await app.publish("a.b", b"x", stream="closing")


@pytest.mark.parametrize("field", ["subjects", "exclude"])
def test_subject_filters_of_the_wrong_type_are_refused(field: str) -> None:
    app = kanthorq.App("postgresql://nowhere.invalid/db")
    options: dict[str, Any] = {"subjects": "a", "exclude": (), field: 5}
    subjects = options.pop("subjects")
    with pytest.raises(InvalidSubject, match="list of them, got int"):
        app.subscribe(subjects, consumer="c", **options)(_noop)


async def _noop(msg: kanthorq.Message) -> None: ...


async def test_several_hosts_in_a_dsn_are_accepted_and_named_when_none_answers() -> None:
    dsn = "postgresql://kq:secret@127.0.0.1:1,127.0.0.1:2/db"
    app = kanthorq.App(dsn)
    with pytest.raises(ConnectionFailed) as failed:
        await app.open()
    assert "127.0.0.1:1,127.0.0.1:2" in str(failed.value)
    assert "secret" not in str(failed.value)
