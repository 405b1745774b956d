"""Replay, retention and dropping, from Python and from the CLI."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

import kanthorq
from kanthorq import TaskState
from kanthorq.cli import main
from kanthorq.errors import ConfigError, NotPublished, UnknownConsumer, UnknownStream
from kanthorq.store import ConsumerQueries, ConsumerSpec
from tests.conftest import (
    Running,
    converted,
    registry,
    stream_table,
    task_states,
    task_table,
    wait_until,
)

AppFactory = Callable[..., kanthorq.App]
Starter = Callable[..., Awaitable[Running]]
NOW = datetime.now(UTC)


@pytest.fixture
async def app(make_app: AppFactory) -> AsyncIterator[kanthorq.App]:
    async with make_app() as opened:
        yield opened


async def consumer(app: kanthorq.App, name: str, include: str = ">") -> ConsumerQueries:
    spec = ConsumerSpec(name, "default", (include,), (), 4, 300_000)
    return await registry(app.pool, app.dsn).consumer(spec)


async def relations(db: asyncpg.Connection) -> set[str]:
    rows = await db.fetch("SELECT relname FROM pg_class WHERE relname LIKE 'kanthorq_%'")
    return {r["relname"] for r in rows}


# ---- replay -------------------------------------------------------------------------


async def test_replay_converts_again_from_a_time_without_duplicating_tasks(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app(poll_interval=60)
    calls: Counter[str] = Counter()

    @app.subscribe("order.>", consumer="audit")
    async def audit(msg: kanthorq.Message) -> None:
        calls[msg.event.id] += 1

    await start_app(app)
    early = await app.publish_many([("order.a", b"1"), ("order.b", b"2")])
    await asyncio.sleep(0.05)
    since = datetime.now(UTC)
    await asyncio.sleep(0.05)
    late = await app.publish_many([("order.c", b"3"), ("order.d", b"4"), ("order.e", b"5")])
    await wait_until(lambda: sum(calls.values()) == 5)
    table = await task_table(db, "audit")
    # a repair: the tasks of two late events were lost
    await db.execute(f"DELETE FROM {table} WHERE event_id = ANY($1)", late[:2])

    result = await app.admin.replay("audit", since=since)
    assert result.updated == 1
    assert set(result.details) == {"cursor_before", "cursor_after"}
    await wait_until(lambda: sum(calls.values()) == 7)
    assert {e: calls[e] for e in early + late} == {
        early[0]: 1,
        early[1]: 1,
        late[0]: 2,
        late[1]: 2,
        late[2]: 1,
    }
    done = {int(TaskState.COMPLETED): 5}
    await wait_until(lambda: _states_are(db, "audit", done))  # the last acks are batched


async def _states_are(db: asyncpg.Connection, consumer: str, expected: dict[int, int]) -> bool:
    return await task_states(db, consumer) == expected


async def test_replay_from_an_event_and_the_cases_left_alone(
    app: kanthorq.App, db: asyncpg.Connection
) -> None:
    queries = await consumer(app, "c")
    ids = await app.publish_many([("a.b", b"1"), ("a.b", b"2")])
    assert await converted(queries, app.pool, 100) == 2
    table = await task_table(db, "c")
    await db.execute(f"DELETE FROM {table}")

    far = await app.admin.replay("c", since=NOW + timedelta(days=1))
    assert (far.updated, far.skipped) == (0, {"no event at or after that time": 1})
    missing = await app.admin.replay("c", event_id="event_nope")
    assert (missing.updated, missing.skipped) == (0, {"event not found": 1})

    back = await app.admin.replay("c", event_id=ids[0])
    assert back.updated == 1
    again = await app.admin.replay("c", event_id=ids[1])  # already before it: never skip
    assert (again.updated, again.skipped) == (0, {"cursor already at or before that point": 1})
    assert await converted(queries, app.pool, 100) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "one of them"),
        ({"since": NOW, "event_id": "event_x"}, "one of them"),
        ({"since": datetime(2026, 1, 1)}, "timezone-aware"),
        ({"event_id": ""}, "not an event id"),
    ],
)
async def test_replay_refuses_bad_arguments(
    app: kanthorq.App, kwargs: dict[str, object], message: str
) -> None:
    await consumer(app, "c")
    with pytest.raises(ConfigError, match=message):
        await app.admin.replay("c", **kwargs)  # type: ignore[arg-type]


# ---- retention ----------------------------------------------------------------------


async def test_delete_events_keeps_what_any_consumer_still_needs(
    app: kanthorq.App, db: asyncpg.Connection
) -> None:
    first = await consumer(app, "first")
    done, open_, later = await app.publish_many([("a.x", b"1"), ("a.y", b"2"), ("a.z", b"3")])
    await consumer(app, "second", include="other.>")
    await converted(first, app.pool, 2)  # first has converted done and open_, not later
    tasks = await task_table(db, "first")
    await db.execute(f"UPDATE {tasks} SET state = 101 WHERE event_id = $1", done)
    events = await stream_table(db)
    await db.execute(f"UPDATE {events} SET created_at = created_at - 86400000")

    # second has converted nothing yet: every event is still ahead of its cursor
    blocked = await app.admin.delete_events("default", before=NOW)
    assert blocked.updated == 0
    assert blocked.skipped == {"not converted by every consumer yet": 3}

    second = await consumer(app, "second", include="other.>")
    await converted(second, app.pool, 100)
    result = await app.admin.delete_events("default", before=NOW, batch_size=1)
    assert result.updated == 1
    assert result.skipped == {"open tasks": 1, "not converted by every consumer yet": 1}
    left = {r["id"] for r in await db.fetch(f"SELECT id FROM {events}")}
    assert left == {open_, later}

    young = await app.admin.delete_events("default", before=NOW - timedelta(days=2))
    assert (young.updated, young.skipped) == (0, {})
    forced = await app.admin.delete_events("default", before=NOW, force=True)
    assert forced.updated == 2
    assert not await db.fetchval(f"SELECT count(*) FROM {events}")


async def test_prune_tasks_deletes_only_old_finalized_tasks(
    app: kanthorq.App, db: asyncpg.Connection
) -> None:
    queries = await consumer(app, "c")
    ids = await app.publish_many([("a.b", str(i).encode()) for i in range(6)])
    await converted(queries, app.pool, 100)
    table = await task_table(db, "c")
    old = "kanthorq_now_ms() - 86400000"
    plan = [(101, old), (-101, old), (-102, old), (101, "kanthorq_now_ms()"), (1, "0"), (102, "0")]
    for event_id, (state, finalized) in zip(ids, plan, strict=True):
        await db.execute(
            f"UPDATE {table} SET state = $2, finalized_at = {finalized}, "
            f"created_at = {old} WHERE event_id = $1",
            event_id,
            state,
        )
    result = await app.admin.prune_tasks("c", before=NOW - timedelta(hours=1), batch_size=2)
    assert (result.updated, result.skipped) == (3, {"not finalized": 2})
    left = {r["event_id"] for r in await db.fetch(f"SELECT event_id FROM {table}")}
    assert left == set(ids[3:])


async def test_retention_refuses_bad_input_before_any_delete(
    app: kanthorq.App, db: asyncpg.Connection
) -> None:
    await app.publish("a.b")
    await consumer(app, "c")
    with pytest.raises(ConfigError, match="timezone-aware"):
        await app.admin.delete_events("default", before=datetime(2030, 1, 1))
    with pytest.raises(ConfigError, match="must be a datetime"):
        await app.admin.prune_tasks("c", before="yesterday")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="batch_size"):
        await app.admin.delete_events("default", before=NOW, batch_size=-1)
    with pytest.raises(UnknownStream):
        await app.admin.delete_events("nostream", before=NOW)
    assert await db.fetchval(f"SELECT count(*) FROM {await stream_table(db)}") == 1


# ---- dropping -----------------------------------------------------------------------


async def test_drop_consumer_and_stream_need_confirmation_and_remove_everything(
    app: kanthorq.App, db: asyncpg.Connection
) -> None:
    await consumer(app, "one")
    await consumer(app, "two")
    await app.publish("a.b")
    before = await relations(db)
    with pytest.raises(ConfigError, match="confirm=True"):
        await app.admin.drop_consumer("one")
    assert await relations(db) == before

    result = await app.admin.drop_consumer("one", confirm=True)
    assert result.details == {"consumers": ["one"]}
    with pytest.raises(UnknownConsumer):
        await app.admin.consumer("one")
    dropped = await app.admin.drop_stream("default", confirm=True)
    assert dropped.details == {"streams": ["default"], "consumers": ["two"]}
    assert await relations(db) == {
        "kanthorq_stream_registry",
        "kanthorq_stream_registry_pkey",
        "kanthorq_stream_registry_name_key",
        "kanthorq_consumer_registry",
        "kanthorq_consumer_registry_pkey",
        "kanthorq_consumer_registry_id_key",
        "kanthorq_migration",
        "kanthorq_migration_pkey",
        "kanthorq_lease",
        "kanthorq_lease_pkey",
        "kanthorq_schedule",
        "kanthorq_schedule_pkey",
    }


# ---- the CLI ------------------------------------------------------------------------


async def test_cli_replay_prune_and_drop(
    app: kanthorq.App, db: asyncpg.Connection, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    queries = await consumer(app, "c")
    await app.publish_many([("a.b", b"1"), ("a.b", b"2")])
    await converted(queries, app.pool, 100)

    def cli(*argv: str) -> Awaitable[int]:
        return asyncio.to_thread(main, [*argv, "--dsn", dsn])

    assert await cli("replay", "c", "--since", "1h", "--json") == 0
    assert json.loads(capsys.readouterr().out)["updated"] == 1
    assert await cli("prune", "tasks", "--consumer", "c", "--before", "1d") == 0
    assert capsys.readouterr().out.strip() == "prune tasks: 0 deleted"
    # --stream defaults to the default stream, as everywhere; a bare number is seconds
    assert await cli("prune", "events", "--before", "86400", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {
        "operation": "prune events",
        "deleted": 0,
        "skipped": {},
    }
    assert await cli("drop", "consumer", "c") == 2
    assert "add --yes" in capsys.readouterr().err
    assert await cli("drop", "stream", "default", "--yes") == 0
    assert (
        capsys.readouterr().out.strip() == "drop stream: 1 deleted (streams default; consumers c)"
    )
    assert not await db.fetchval("SELECT count(*) FROM kanthorq_consumer_registry")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["replay", "c"], "one of the arguments --since --from-event is required"),
        (["replay", "c", "--since", "yesterday"], "not a duration or a time: 'yesterday'"),
        (["replay", "c", "--since", "1y"], "90 (seconds), 90s, 15m, 2h or 3d"),
        (["prune", "events", "--before", "soon"], "an ISO 8601 time with its offset"),
        (["prune", "events", "--stream", "x", "--before", "2020-01-01"], "no UTC offset"),
        (["drop", "stream", "bad name", "--yes"], "stream name 'bad name' is not valid"),
    ],
)
def test_cli_history_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main([*argv, "--dsn", "postgresql://nobody@127.0.0.1:1/none"])
    except SystemExit as exc:
        code = int(exc.code or 0)
    assert code == 2
    assert message in capsys.readouterr().err


async def test_publishing_to_a_dropped_stream_creates_it_again(
    app: kanthorq.App, db: asyncpg.Connection
) -> None:
    await app.publish("a.b")
    await app.admin.drop_stream("default", confirm=True)
    await app.publish("a.b")  # the process had the old stream cached
    await app.admin.drop_stream("default", confirm=True)
    assert len(await app.publish_many([("a.b", b"1"), ("a.c", b"2")])) == 2
    assert await db.fetchval(f"SELECT count(*) FROM {await stream_table(db)}") == 2
    await app.admin.drop_stream("default", confirm=True)
    async with app.pool.acquire() as conn, conn.transaction():
        # in the caller's transaction there is no retry: it failed, the caller retries it
        with pytest.raises(NotPublished, match="caller's transaction") as info:
            await app.publish("a.b", conn=conn)
        assert isinstance(info.value.__cause__, asyncpg.UndefinedTableError)
        assert info.value.may_be_written is False
    await app.publish("a.b", conn=None)
