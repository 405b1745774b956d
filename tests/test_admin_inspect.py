"""Read-only inspection from Python: app.admin.show, list_tasks and get_task."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

import kanthorq
from kanthorq.admin import TaskFilter
from kanthorq.admin.views import body_dict, body_kind, pretty_body, safe_text
from kanthorq.entities import ATTEMPT_BASE_KEY, TaskState
from kanthorq.errors import ConfigError, InvalidName, InvalidSubject, UnknownConsumer, UnknownStream
from kanthorq.ids import new_id
from kanthorq.store import ConsumerQueries, ConsumerSpec
from tests.conftest import Running, converted, stream_table, task_table, wait_state

AppFactory = Callable[..., kanthorq.App]
ZERO_STATES = {
    "pending": 0,
    "available": 0,
    "running": 0,
    "retryable": 0,
    "completed": 0,
    "discarded": 0,
    "cancelled": 0,
}


@pytest.fixture
async def app(make_app: AppFactory) -> AsyncIterator[kanthorq.App]:
    async with make_app() as opened:
        yield opened


async def register(
    app: kanthorq.App,
    name: str = "email",
    includes: tuple[str, ...] = ("order.>",),
    excludes: tuple[str, ...] = (),
    stream: str = "default",
    attempt_max: int = 4,
    visibility_timeout_ms: int = 30_000,
) -> ConsumerQueries:
    """A consumer registered as a running app would, without running its workers."""
    registry = app._registry
    assert registry is not None
    spec = ConsumerSpec(name, stream, includes, excludes, attempt_max, visibility_timeout_ms)
    return await registry.consumer(spec)


async def convert(app: kanthorq.App, queries: ConsumerQueries, events: int) -> None:
    """Convert exactly ``events`` events past the consumer's cursor."""
    await converted(queries, app.pool, events)


async def set_tasks(db: asyncpg.Connection, consumer: str, ids: list[str], sql: str) -> None:
    """``UPDATE <tasks> SET <sql> WHERE event_id = ANY(ids)``; ``$2`` is now (ms)."""
    table = await task_table(db, consumer)
    args: list[object] = [ids]
    sql = sql.replace("$2", "$2::BIGINT")
    if "$2" in sql:
        args.append(await db.fetchval("SELECT kanthorq_now_ms()"))
    await db.execute(f"UPDATE {table} SET {sql} WHERE event_id = ANY($1::TEXT[])", *args)


# ---- show -------------------------------------------------------------------------------


async def test_show_on_an_empty_database(app: kanthorq.App) -> None:
    overview = await app.admin.show()
    assert overview.streams == []
    assert overview.consumers == []
    assert overview.as_dict()["streams"] == []


async def test_show_counts_events_and_finds_the_newest(app: kanthorq.App) -> None:
    first = await app.publish_many([("order.created", {"n": n}) for n in range(20)])
    await asyncio.sleep(0.01)
    last = await app.publish("order.paid", b"x")
    await app.publish("user.created", b"y", stream="users")
    overview = await app.admin.show()
    assert [s.name for s in overview.streams] == ["default", "users"]
    default = overview.streams[0]
    assert default.events == 21
    assert default.estimated == ()
    assert default.newest_event_id == last
    assert default.newest_event_id > max(first)
    created = await app.pool.fetchval(
        f"SELECT created_at FROM {await stream_table(app.pool, 'default')} WHERE id = $1", last
    )
    assert default.newest_event_at == created
    assert default.oldest_event_at is not None
    assert default.oldest_event_at <= created
    assert overview.streams[1].events == 1


async def test_lag_counts_matching_events_not_yet_converted(app: kanthorq.App) -> None:
    await app.publish_many([("order.created", b"")] * 6 + [("user.created", b"")] * 4)
    await app.publish_many([("order.internal", b"")] * 3 + [("order.paid", b"")] * 2)
    queries = await register(app, includes=("order.>",), excludes=("order.internal",))
    consumer = (await app.admin.show()).consumers[0]
    assert consumer.name == "email"
    assert consumer.includes == ("order.>",)
    assert consumer.excludes == ("order.internal",)
    assert (consumer.behind, consumer.lag) == (15, 8)
    assert consumer.estimated == ()
    assert consumer.tasks == ZERO_STATES

    await convert(app, queries, 10)  # the first batch: 6 order.created become tasks
    consumer = (await app.admin.show()).consumers[0]
    assert (consumer.behind, consumer.lag) == (5, 2)
    assert consumer.tasks == {**ZERO_STATES, "available": 6}

    await convert(app, queries, 5)
    consumer = (await app.admin.show()).consumers[0]
    assert (consumer.behind, consumer.lag) == (0, 0)
    assert consumer.tasks["available"] == 8


async def test_tasks_per_state_oldest_due_and_past_timeout(
    app: kanthorq.App, db: asyncpg.Connection
) -> None:
    ids = await app.publish_many([("order.created", b"")] * 16)
    queries = await register(app, visibility_timeout_ms=30_000)
    await convert(app, queries, 16)
    await set_tasks(db, "email", ids[0:3], "state = 101")
    await set_tasks(db, "email", ids[3:5], "state = -102")
    await set_tasks(db, "email", ids[5:6], "state = -101")
    await set_tasks(db, "email", ids[6:7], "state = 0")
    # retryable: one due 90 s ago (the oldest), one due in an hour
    await set_tasks(db, "email", ids[7:8], "state = 102, schedule_at = $2 - 90000")
    await set_tasks(db, "email", ids[8:9], "state = 102, schedule_at = $2 + 3600000")
    # available: due 40 s ago, and one scheduled in the future
    await set_tasks(db, "email", ids[9:12], "schedule_at = $2 - 40000")
    await set_tasks(db, "email", ids[12:13], "schedule_at = $2 + 60000")
    # running: two claimed 31 s and 10 min ago (past the 30 s timeout), one 5 s ago
    await set_tasks(db, "email", ids[13:14], "state = 2, attempted_at = $2 - 31000")
    await set_tasks(db, "email", ids[14:15], "state = 2, attempted_at = $2 - 600000")
    await set_tasks(db, "email", ids[15:16], "state = 2, attempted_at = $2 - 5000")

    consumer = (await app.admin.show()).consumers[0]
    assert consumer.tasks == {
        "pending": 1,
        "available": 4,
        "running": 3,
        "retryable": 2,
        "completed": 3,
        "discarded": 2,
        "cancelled": 1,
    }
    assert consumer.past_visibility_timeout == 2
    assert consumer.oldest_due_age_ms is not None
    assert 90_000 <= consumer.oldest_due_age_ms < 100_000
    assert consumer.estimated == ()


async def test_no_due_task_has_no_age(app: kanthorq.App, db: asyncpg.Connection) -> None:
    ids = await app.publish_many([("order.created", b"")] * 2)
    queries = await register(app)
    await convert(app, queries, 2)
    await set_tasks(db, "email", ids, "state = 102, schedule_at = $2 + 60000")
    consumer = (await app.admin.show()).consumers[0]
    assert consumer.oldest_due_age_ms is None
    assert consumer.past_visibility_timeout == 0


async def test_a_state_code_written_by_another_client_is_shown(
    app: kanthorq.App, db: asyncpg.Connection
) -> None:
    ids = await app.publish_many([("order.created", b"")] * 3)
    queries = await register(app)
    await convert(app, queries, 3)
    await set_tasks(db, "email", ids[:2], "state = 77")
    consumer = (await app.admin.show()).consumers[0]
    assert consumer.tasks == {**ZERO_STATES, "available": 1, "77": 2}


async def test_large_counts_are_estimates_and_say_so(
    app: kanthorq.App, db: asyncpg.Connection
) -> None:
    # several transactions, so the statistics of txid have something to tell; three of
    # every four events match
    for _ in range(4):
        await app.publish_many(([("order.created", b"")] * 3 + [("user.created", b"")]) * 50)
    queries = await register(app)
    await convert(app, queries, 200)  # 150 tasks, 600 events behind, 450 of them match
    table = await task_table(db, "email")
    await db.execute(
        f"UPDATE {table} SET state = 101 WHERE event_id IN "
        f"(SELECT event_id FROM {table} ORDER BY event_id LIMIT 140)"
    )
    await db.execute(f"ANALYZE {await stream_table(db)}")
    await db.execute(f"ANALYZE {table}")

    overview = await app.admin.show(exact_limit=100)
    assert overview.exact_limit == 100
    stream = overview.streams[0]
    assert stream.estimated == ("events",)
    assert stream.events == 800  # ANALYZE read every row of a table this small
    consumer = overview.consumers[0]
    assert set(consumer.estimated) == {"behind", "lag", "tasks.completed"}
    assert consumer.tasks["completed"] == 140
    assert consumer.tasks["available"] == 10  # below the limit: counted
    assert consumer.behind is not None
    assert consumer.lag is not None
    assert 540 <= consumer.behind <= 700
    assert 400 <= consumer.lag <= 530

    exact = (await app.admin.show()).consumers[0]
    assert (exact.behind, exact.lag, exact.estimated) == (600, 450, ())


async def test_show_one_stream(app: kanthorq.App) -> None:
    await app.publish("order.created", b"")
    await app.publish("user.created", b"", stream="users")
    await register(app, "email")
    await register(app, "audit", includes=(">",), stream="users")
    overview = await app.admin.show("users")
    assert [s.name for s in overview.streams] == ["users"]
    assert [c.name for c in overview.consumers] == ["audit"]
    assert overview.consumers[0].lag == 1
    with pytest.raises(UnknownStream, match="nope"):
        await app.admin.show("nope")
    with pytest.raises(InvalidName):
        await app.admin.show("no such")
    with pytest.raises(ConfigError, match="exact_limit"):
        await app.admin.show(exact_limit=0)


async def test_a_stream_made_by_another_client_without_txid(
    app: kanthorq.App, db: asyncpg.Connection
) -> None:
    """A stream and consumer as a client that writes only the contract columns leaves them:
    no txid column yet, and no task table."""
    stream_id, consumer_id = new_id("stream"), new_id("consumer")
    await db.execute(
        "INSERT INTO kanthorq_stream_registry (id, name, created_at, updated_at) "
        "VALUES ($1, 'go', 0, 0)",
        stream_id,
    )
    table = f'"kanthorq_{stream_id}"'
    await db.execute(
        f"CREATE TABLE {table} (id VARCHAR(64) PRIMARY KEY, subject VARCHAR(256) NOT NULL, "
        "body BYTEA, metadata JSONB NOT NULL DEFAULT '{}', created_at BIGINT NOT NULL)"
    )
    events = sorted(new_id("event") for _ in range(5))
    for n, event_id in enumerate(events):
        subject = "a.b" if n < 3 else "c.d"
        await db.execute(
            f"INSERT INTO {table} (id, subject, created_at) VALUES ($1, $2, $3)",
            event_id,
            subject,
            1000 + n,
        )
    await db.execute(
        "INSERT INTO kanthorq_consumer_registry (stream_id, stream_name, id, name, "
        "subject_includes, cursor) VALUES ($1, 'go', $2, 'gocons', '{a.>}', $3)",
        stream_id,
        consumer_id,
        events[0],
    )
    overview = await app.admin.show("go")
    assert overview.streams[0].events == 5
    assert overview.streams[0].newest_event_at == 1004
    consumer = overview.consumers[0]
    assert (consumer.behind, consumer.lag) == (4, 2)  # past the cursor, by id
    assert consumer.tasks == {}
    assert consumer.note == "its task table does not exist"

    await db.execute(f"DROP TABLE {table}")
    overview = await app.admin.show("go")
    assert overview.streams[0].events is None
    assert overview.streams[0].note == "its event table does not exist"
    assert overview.consumers[0].lag is None
    assert overview.consumers[0].note is not None
    assert "event table does not exist" in overview.consumers[0].note


async def test_show_as_dict_is_json(app: kanthorq.App) -> None:
    await app.publish("order.created", b"")
    await register(app)
    data = json.loads(json.dumps((await app.admin.show()).as_dict()))
    assert set(data) == {"now", "exact_limit", "streams", "consumers", "schedules"}
    assert data["streams"][0]["events"] == 1
    assert data["consumers"][0]["lag"] == 1
    assert data["consumers"][0]["tasks"] == ZERO_STATES
    assert data["consumers"][0]["estimated"] == []


# ---- list_tasks ---------------------------------------------------------------------------


@pytest.fixture
async def mixed(app: kanthorq.App, db: asyncpg.Connection) -> list[str]:
    """Ten tasks of consumer email: 0-3 available, 4-6 retryable (order.paid), 7-9 completed;
    4 and 5 were created an hour ago; 6 has two errors."""
    ids = await app.publish_many(
        [("order.created", {"n": n}) for n in range(4)]
        + [("order.paid", {"n": n}) for n in range(4, 7)]
        + [("order.created", {"n": n}) for n in range(7, 10)]
    )
    queries = await register(app)
    await convert(app, queries, 10)
    await set_tasks(db, "email", ids[4:7], "state = 102, attempt_count = 1")
    await set_tasks(db, "email", ids[4:6], "created_at = $2 - 3600000")
    await set_tasks(db, "email", ids[4:5], "schedule_at = $2 + 50000")
    await set_tasks(db, "email", ids[5:6], "schedule_at = $2 + 20000")
    await set_tasks(db, "email", ids[6:7], "schedule_at = $2 + 30000")
    await set_tasks(
        db,
        "email",
        ids[6:7],
        """attempt_count = 2, attempted_error = ARRAY[
            '{"at": 1, "attempt": 1, "error": "ValueError: first"}',
            '{"at": 2, "attempt": 2, "error": "KeyError: second", "traceback": "tb"}'
        ]::JSONB[]""",
    )
    await set_tasks(db, "email", ids[7:10], "state = 101, attempt_count = 1")
    return ids


async def test_list_tasks_newest_first_by_default(app: kanthorq.App, mixed: list[str]) -> None:
    tasks = await app.admin.list_tasks("email")
    assert [t.event_id for t in tasks] == mixed[::-1]
    assert (await app.admin.list_tasks("email", limit=3))[-1].event_id == mixed[7]
    oldest = await app.admin.list_tasks("email", order="oldest", limit=2)
    assert [t.event_id for t in oldest] == mixed[:2]


async def test_list_tasks_filters(app: kanthorq.App, mixed: list[str]) -> None:
    retryable = await app.admin.list_tasks("email", TaskFilter.build(states="retryable"))
    assert {t.event_id for t in retryable} == set(mixed[4:7])
    assert {t.state for t in retryable} == {"retryable"}
    both = await app.admin.list_tasks("email", TaskFilter.build(states=["retryable", 101]))
    assert {t.event_id for t in both} == set(mixed[4:10])
    paid = await app.admin.list_tasks("email", TaskFilter.build(subject="order.paid"))
    assert {t.event_id for t in paid} == set(mixed[4:7])
    old = await app.admin.list_tasks("email", TaskFilter.build(older_than=600))
    assert {t.event_id for t in old} == set(mixed[4:6])
    none = await app.admin.list_tasks("email", TaskFilter.build(states="pending"))
    assert none == []


async def test_list_tasks_due_order_and_fields(app: kanthorq.App, mixed: list[str]) -> None:
    retryable = TaskFilter.build(states="retryable")
    due = await app.admin.list_tasks("email", retryable, order="due")
    assert [t.event_id for t in due] == [mixed[5], mixed[6], mixed[4]]
    task = due[1]
    assert task.subject == "order.paid"
    assert task.state_code == 102
    assert (task.attempts, task.attempts_used) == (2, 2)
    assert task.errors == 2
    assert task.last_error == "KeyError: second"
    assert task.last_error_at == 2
    assert due[0].errors == 0
    assert due[0].last_error is None
    assert json.loads(json.dumps(task.as_dict()))["last_error"] == "KeyError: second"


async def test_list_tasks_counts_attempts_since_a_resume(
    app: kanthorq.App, db: asyncpg.Connection, mixed: list[str]
) -> None:
    await set_tasks(
        db,
        "email",
        mixed[6:7],
        f"attempt_count = 5, metadata = '{{\"{ATTEMPT_BASE_KEY}\": 4}}'::JSONB",
    )
    (task,) = await app.admin.list_tasks("email", TaskFilter.build(event_ids=[mixed[6]]))
    assert (task.attempts, task.attempts_used) == (5, 1)
    detail = await app.admin.get_task("email", mixed[6])
    assert detail is not None
    assert (detail.attempts, detail.attempts_used, detail.attempt_max) == (5, 1, 4)


async def test_list_tasks_bad_inputs(app: kanthorq.App, mixed: list[str]) -> None:
    with pytest.raises(UnknownConsumer, match="nobody"):
        await app.admin.list_tasks("nobody")
    with pytest.raises(InvalidName):
        await app.admin.list_tasks("no body")
    with pytest.raises(ConfigError, match="limit"):
        await app.admin.list_tasks("email", limit=0)
    with pytest.raises(ConfigError, match="order"):
        await app.admin.list_tasks("email", order="random")
    with pytest.raises(ConfigError, match="unknown task state"):
        TaskFilter.build(states="stuck")
    with pytest.raises(InvalidSubject):
        TaskFilter.build(subject="order.>.x")


# ---- get_task ------------------------------------------------------------------------------


async def test_get_task_with_every_error_and_its_event(
    make_app: AppFactory, db: asyncpg.Connection, start_app: Callable[..., object]
) -> None:
    """A real worker fails the handler twice: both errors are recorded with tracebacks."""
    app = make_app()

    @app.subscribe("order.>", consumer="email", max_retries=1, backoff=kanthorq.Fixed(delay=0))
    async def handler(msg: kanthorq.Message) -> None:
        raise ValueError(f"no order {msg.json()['order_id']}")

    async with app:
        event_id = await app.publish(
            "order.created", {"order_id": 42, "items": ["a"]}, metadata={"source": "test"}
        )
        running = await start_app(app)  # type: ignore[operator]
        assert isinstance(running, Running)
        await wait_state(db, "email", event_id, TaskState.DISCARDED)
        await running.stop()
        task = await app.admin.get_task("email", event_id)

    assert task is not None
    assert (task.consumer, task.stream) == ("email", "default")
    assert (task.state, task.state_code) == ("discarded", -102)
    assert (task.attempts, task.attempts_used, task.attempt_max) == (2, 2, 2)
    assert [e["attempt"] for e in task.errors] == [1, 2]
    for record in task.errors:
        assert record["error"] == "ValueError: no order 42"
        assert "Traceback (most recent call last)" in record["traceback"]
        assert "raise ValueError" in record["traceback"]
    assert task.event is not None
    assert task.event.subject == "order.created"
    assert task.event.metadata == {"source": "test"}
    assert body_kind(task.event.body) == ("json", {"order_id": 42, "items": ["a"]})
    data = json.loads(json.dumps(task.as_dict()))
    assert data["event"]["body"]["encoding"] == "json"
    assert data["event"]["body"]["value"] == {"order_id": 42, "items": ["a"]}
    assert len(data["errors"]) == 2


async def test_get_task_unknown_and_gone(
    app: kanthorq.App, db: asyncpg.Connection, mixed: list[str]
) -> None:
    assert await app.admin.get_task("email", "event_nope") is None
    await db.execute(f"DELETE FROM {await stream_table(db)} WHERE id = $1", mixed[0])
    task = await app.admin.get_task("email", mixed[0])
    assert task is not None
    assert task.event is None
    assert task.as_dict()["event"] is None
    with pytest.raises(UnknownConsumer):
        await app.admin.get_task("nobody", mixed[0])
    with pytest.raises(ConfigError):
        await app.admin.get_task("email", "")


async def test_get_task_keeps_records_that_are_not_objects(
    app: kanthorq.App, db: asyncpg.Connection, mixed: list[str]
) -> None:
    await set_tasks(
        db, "email", mixed[0:1], """attempted_error = ARRAY['"just text"', '[1]']::JSONB[]"""
    )
    task = await app.admin.get_task("email", mixed[0])
    assert task is not None
    assert task.errors == [{"raw": '"just text"'}, {"raw": "[1]"}]


# ---- bodies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "kind", "encoding"),
    [
        (b"", "empty", "utf-8"),
        (b'{"a": [1, 2]}', "json", "json"),
        (b"42", "json", "json"),
        (b"NaN", "text", "utf-8"),  # not strict JSON
        (b"hello\nworld\t!", "text", "utf-8"),
        (b"\x1b[31mred", "binary", "base64"),
        (b"\x00\x01\xff", "binary", "base64"),
        ("caf\u00e9".encode(), "text", "utf-8"),
    ],
)
def test_body_kinds(body: bytes, kind: str, encoding: str) -> None:
    assert body_kind(body)[0] == kind
    assert body_dict(body)["encoding"] == encoding
    assert body_dict(body)["size"] == len(body)


def test_pretty_bodies() -> None:
    assert pretty_body(b'{"a":{"b":1}}') == ("json", '{\n  "a": {\n    "b": 1\n  }\n}')
    kind, text = pretty_body(b"\x00\x01ABC" + bytes(range(200, 216)))
    assert kind == "binary"
    assert text.splitlines()[0] == (
        "00000000  00 01 41 42 43 c8 c9 ca cb cc cd ce cf d0 d1 d2  |..ABC...........|"
    )
    assert text.splitlines()[1].startswith("00000010  d3 d4 d5 d6 d7")
    kind, text = pretty_body(bytes(100), hex_limit=32)
    assert text.splitlines()[-1] == "... 68 more bytes"
    assert body_dict(b"\x00\xff")["value"] == "AP8="


def test_safe_text_escapes_what_a_terminal_acts_on() -> None:
    assert safe_text("a\x1b[2Jb\u202ec\nd\te") == "a\\x1b[2Jb\\u202ec\nd\te"
    kind, text = pretty_body(b'{"x": "\\u001b[31m", "y": "\\u202e"}')
    assert kind == "json"
    assert "\x1b" not in text
    assert "\u202e" not in text
    assert '"y": "\\u202e"' in text
