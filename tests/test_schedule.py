"""Scheduled events: publish(delay=/at=), the reserved metadata key, and waking for them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone

import asyncpg
import pytest

import kanthorq
from kanthorq import TaskState
from kanthorq.cli import main
from kanthorq.errors import ConfigError, InvalidPayload
from kanthorq.schedule import SCHEDULE_KEY
from tests.conftest import Running, stream_table, task_row, wait_state, wait_until

AppFactory = Callable[..., kanthorq.App]
Starter = Callable[..., Awaitable[Running]]


async def test_a_delayed_event_runs_at_its_time_for_every_consumer_without_polling(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app(poll_interval=60)  # a poll would come far too late: the timer must wake it
    started: dict[str, float] = {}

    @app.subscribe("invoice.remind", consumer="mail")
    async def mail(msg: kanthorq.Message) -> None:
        started["mail"] = time.time()

    @app.subscribe("invoice.>", consumer="audit")
    async def audit(msg: kanthorq.Message) -> None:
        started["audit"] = time.time()

    await start_app(app)
    sent = time.time()
    event_id = await app.publish("invoice.remind", {"id": 1}, delay=1.5)
    for consumer in ("mail", "audit"):
        row = await wait_state(db, consumer, event_id, TaskState.COMPLETED, timeout=10)
        assert row["attempt_count"] == 1
        assert started[consumer] - sent >= 1.4, "ran before its time"
        assert started[consumer] - sent < 5, "the worker did not wake for the scheduled time"


async def test_at_sets_each_tasks_schedule_and_the_metadata_key(
    make_app: AppFactory, db: asyncpg.Connection, start_app: Starter
) -> None:
    app = make_app()

    @app.subscribe("report.build", consumer="reports")
    async def build(msg: kanthorq.Message) -> None:
        raise AssertionError("must not run before its time")

    await start_app(app)
    when = datetime.now(UTC) + timedelta(hours=2)
    event_id = await app.publish("report.build", b"{}", at=when)
    row = await wait_until(lambda: task_row(db, "reports", event_id))
    assert row["state"] == TaskState.AVAILABLE
    assert abs(row["schedule_at"] - when.timestamp() * 1000) < 2
    meta = await db.fetchval(
        f"SELECT metadata FROM {await stream_table(db)} WHERE id = $1", event_id
    )
    assert f'"{SCHEDULE_KEY}"' in meta


async def test_publish_many_schedules_every_event_and_keeps_their_metadata(
    make_app: AppFactory, db: asyncpg.Connection, start_app: Starter
) -> None:
    app = make_app()

    @app.subscribe("batch.>", consumer="batch")
    async def handle(msg: kanthorq.Message) -> None:
        raise AssertionError("must not run yet")

    await start_app(app)
    ids = await app.publish_many([("batch.a", b"1", {"k": 1}), ("batch.b", b"2")], delay=3600)
    for event_id in ids:
        row = await wait_until(lambda e=event_id: task_row(db, "batch", e))
        assert row["schedule_at"] > time.time() * 1000 + 3500_000
    meta = await db.fetchval(f"SELECT metadata FROM {await stream_table(db)} WHERE id = $1", ids[0])
    assert '"k": 1' in meta


async def test_a_schedule_in_the_past_runs_now(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app()

    @app.subscribe("late.>", consumer="late")
    async def handle(msg: kanthorq.Message) -> None:
        pass

    await start_app(app)
    event_id = await app.publish("late.x", at=datetime(2001, 1, 1, tzinfo=UTC))
    await wait_state(db, "late", event_id, TaskState.COMPLETED)


async def test_another_clients_schedule_key_is_honoured_and_garbage_is_ignored(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app()

    @app.subscribe("raw.>", consumer="raw")
    async def handle(msg: kanthorq.Message) -> None:
        pass

    await start_app(app)
    await app.publish("raw.warmup")  # creates the stream
    table = await stream_table(db)
    future = int(time.time() * 1000) + 3_600_000
    rows = [
        ("event_sched", f'{{"{SCHEDULE_KEY}": {future}}}'),
        ("event_text", f'{{"{SCHEDULE_KEY}": "tomorrow"}}'),
        ("event_huge", f'{{"{SCHEDULE_KEY}": 1e300}}'),
        ("event_negative", f'{{"{SCHEDULE_KEY}": -5}}'),
    ]
    for event_id, meta in rows:
        await db.execute(
            f"INSERT INTO {table} (id, subject, body, metadata) VALUES ($1, 'raw.x', '', $2)",
            event_id,
            meta,
        )
    row = await wait_until(lambda: task_row(db, "raw", "event_sched"))
    assert row["schedule_at"] == future
    assert row["state"] == TaskState.AVAILABLE
    await wait_state(db, "raw", "event_text", TaskState.COMPLETED)
    await wait_state(db, "raw", "event_negative", TaskState.COMPLETED)
    huge = await wait_until(lambda: task_row(db, "raw", "event_huge"))
    assert huge["schedule_at"] == 10**15  # clamped, not an error that stops conversion


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"delay": -1}, "delay must be a number of seconds"),
        ({"delay": float("nan")}, "delay must be a number of seconds"),
        ({"delay": True}, "delay must be a number of seconds"),
        ({"delay": "5"}, "delay must be a number of seconds"),
        ({"at": datetime(2030, 1, 1)}, "timezone-aware"),
        ({"at": "2030-01-01"}, "at must be a datetime"),
        ({"delay": 1, "at": datetime.now(UTC)}, "not both"),
    ],
)
async def test_bad_schedules_are_refused_before_any_sql(
    make_app: AppFactory, db: asyncpg.Connection, options: dict[str, object], message: str
) -> None:
    async with make_app() as app:
        with pytest.raises(ConfigError, match=message):
            await app.publish("a.b", b"x", **options)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match=message):
            await app.publish_many([("a.b", b"x")], **options)  # type: ignore[arg-type]
    assert not await db.fetchval("SELECT count(*) FROM kanthorq_stream_registry")


@pytest.mark.parametrize("value", ["soon", 1.5, -1, True, 10**16])
async def test_a_bad_reserved_key_is_refused(
    make_app: AppFactory, db: asyncpg.Connection, value: object
) -> None:
    async with make_app() as app:
        with pytest.raises(InvalidPayload, match=SCHEDULE_KEY):
            await app.publish("a.b", metadata={SCHEDULE_KEY: value})
    assert not await db.fetchval("SELECT count(*) FROM kanthorq_stream_registry")


async def test_the_reserved_key_and_delay_together_are_refused(make_app: AppFactory) -> None:
    async with make_app() as app:
        with pytest.raises(InvalidPayload, match="reserved"):
            await app.publish("a.b", metadata={SCHEDULE_KEY: 5}, delay=1)


async def test_cli_pub_delay_and_at(
    dsn: str, db: asyncpg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await asyncio.to_thread(main, ["pub", "a.b", "x", "--delay", "60", "--dsn", dsn]) == 0
    first = capsys.readouterr().out.strip()
    argv = ["pub", "a.b", "y", "--at", "2031-02-03T04:05:06+02:00", "--dsn", dsn]
    assert await asyncio.to_thread(main, argv) == 0
    second = capsys.readouterr().out.strip()
    table = await stream_table(db)
    rows = {
        r["id"]: r["at"]
        for r in await db.fetch(
            f"SELECT id, (metadata->>'{SCHEDULE_KEY}')::BIGINT AS at FROM {table}"
        )
    }
    assert abs(rows[first] - (time.time() + 60) * 1000) < 5000
    expected = datetime(2031, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=2)))
    assert rows[second] == expected.timestamp() * 1000


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--delay", "-3"], "not a duration: '-3' (give a duration: 90 (seconds), 90s"),
        (["--delay", "soon"], "not a duration"),
        (["--at", "2031-02-03T04:05:06"], "no UTC offset"),
        (["--at", "tomorrow"], "not an ISO 8601 time"),
        (["--delay", "5", "--at", "2031-02-03T04:05:06Z"], "not allowed with"),
    ],
)
def test_cli_pub_bad_schedules_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["pub", "a.b", "x", *argv, "--dsn", "postgresql://nobody@127.0.0.1:1/none"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
