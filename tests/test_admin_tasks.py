"""Task management: cancel, resume and retry, by event id and by filter, from Python and the
CLI; the attempt budget after a resume; fencing across a resume."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

import kanthorq
from kanthorq import TaskState
from kanthorq.admin import TaskFilter
from kanthorq.cli import main
from kanthorq.errors import ConfigError, UnknownConsumer
from kanthorq.store import ConsumerQueries, ConsumerSpec
from tests.conftest import Running, converted, registry, task_table, wait_state

AppFactory = Callable[..., kanthorq.App]
Starter = Callable[..., Awaitable[Running]]
SPEC = ConsumerSpec("ops", "default", ("order.>", "user.>"), (), 4, 300_000)


@pytest.fixture
async def app(make_app: AppFactory) -> AsyncIterator[kanthorq.App]:
    async with make_app() as opened:
        yield opened


async def arrange(
    app: kanthorq.App, db: asyncpg.Connection, tasks: list[tuple[str, TaskState]]
) -> tuple[ConsumerQueries, list[str]]:
    """One event and one task per (subject, state), created an hour ago."""
    queries = await registry(app.pool, app.dsn).consumer(SPEC)
    ids = await app.publish_many([(subject, b"{}") for subject, _ in tasks])
    await converted(queries, app.pool, 1000)
    table = await task_table(db, "ops")
    for event_id, (_, state) in zip(ids, tasks, strict=True):
        await db.execute(
            f"UPDATE {table} SET state = $2, attempt_count = $3, "
            "schedule_at = kanthorq_now_ms() + 3600000, "
            "created_at = kanthorq_now_ms() - 3600000 WHERE event_id = $1",
            event_id,
            int(state),
            0 if state in (TaskState.AVAILABLE, TaskState.PENDING) else 4,
        )
    return queries, ids


async def states(db: asyncpg.Connection, ids: list[str]) -> list[TaskState]:
    table = await task_table(db, "ops")
    found = dict(await db.fetch(f"SELECT event_id, state FROM {table}"))
    return [TaskState(found[i]) for i in ids]


async def test_cancel_by_id_changes_only_cancellable_tasks_and_says_why_not(
    app: kanthorq.App, db: asyncpg.Connection
) -> None:
    S = TaskState
    given = [S.PENDING, S.AVAILABLE, S.RETRYABLE, S.RUNNING, S.COMPLETED, S.DISCARDED]
    _, ids = await arrange(app, db, [("order.x", s) for s in given])
    result = await app.admin.cancel("ops", [*ids, "event_missing"])
    assert result.updated == 3
    assert result.skipped == {
        "wrong state (running)": 1,
        "wrong state (completed)": 1,
        "wrong state (discarded)": 1,
        "not found": 1,
    }
    assert await states(db, ids) == [S.CANCELLED] * 3 + given[3:]
    table = await task_table(db, "ops")
    finalized = await db.fetchval(
        f"SELECT min(finalized_at) FROM {table} WHERE state = -101 AND event_id = ANY($1)", ids
    )
    assert finalized > 0


async def test_cancel_by_filter_walks_every_batch_and_leaves_the_rest(
    app: kanthorq.App, db: asyncpg.Connection
) -> None:
    plan = [("order.created", TaskState.AVAILABLE)] * 7 + [("user.created", TaskState.AVAILABLE)]
    _, ids = await arrange(app, db, plan)
    table = await task_table(db, "ops")
    await db.execute(
        f"UPDATE {table} SET created_at = kanthorq_now_ms() WHERE event_id = $1", ids[0]
    )
    selection = TaskFilter.build(subject="order.*", older_than=600)
    result = await app.admin.cancel("ops", filter=selection, batch_size=2)
    assert (result.updated, result.skipped) == (6, {})
    after = await states(db, ids)
    assert after[0] == TaskState.AVAILABLE  # too young
    assert after[1:7] == [TaskState.CANCELLED] * 6
    assert after[7] == TaskState.AVAILABLE  # another subject


async def test_resume_gives_the_attempt_budget_back_and_keeps_attempts_unique(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app(poll_interval=60)
    seen: list[int] = []

    @app.subscribe("job.>", consumer="jobs", max_retries=1, backoff=kanthorq.Fixed(delay=0))
    async def job(msg: kanthorq.Message) -> None:
        seen.append(msg.task.attempt_count)
        raise RuntimeError("always fails")

    await start_app(app)
    event_id = await app.publish("job.run")
    await wait_state(db, "jobs", event_id, TaskState.DISCARDED)
    assert seen == [1, 2]
    result = await app.admin.resume("jobs", [event_id])
    assert (result.updated, result.skipped) == (1, {})
    row = await wait_state(db, "jobs", event_id, TaskState.DISCARDED)
    assert seen == [1, 2, 3, 4]  # two more attempts: the budget of max_retries=1 again
    assert row["attempt_count"] == 4
    # resuming a task that is not discarded or cancelled changes nothing
    again = await app.admin.resume("jobs", filter=TaskFilter.build(states="completed"))
    assert (again.updated, again.skipped) == (0, {})


async def test_a_stale_ack_from_before_a_resume_cannot_complete_the_new_attempt(
    app: kanthorq.App, db: asyncpg.Connection
) -> None:
    queries, ids = await arrange(app, db, [("order.x", TaskState.DISCARDED)])
    await app.admin.resume("ops", ids)
    table = await task_table(db, "ops")
    await db.execute(f"UPDATE {table} SET schedule_at = 0")
    claimed = await queries.claim(app.pool, 10)
    assert [c.task.attempt_count for c in claimed] == [5]
    assert claimed[0].task.attempts_used == 1
    assert await queries.complete(app.pool, ids, [4]) == set()  # the old attempt: stale
    assert await states(db, ids) == [TaskState.RUNNING]
    assert await queries.complete(app.pool, ids, [5]) == {(ids[0], 5)}


async def test_retry_now_wakes_a_sleeping_worker(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app(poll_interval=60)
    calls: list[int] = []

    @app.subscribe("retry.>", consumer="retry", backoff=kanthorq.Fixed(delay=3600))
    async def handle(msg: kanthorq.Message) -> None:
        calls.append(msg.task.attempt_count)
        if len(calls) == 1:
            raise RuntimeError("first attempt fails")

    await start_app(app)
    event_id = await app.publish("retry.x")
    await wait_state(db, "retry", event_id, TaskState.RETRYABLE)
    result = await app.admin.retry_now("retry", filter=TaskFilter.build(states="retryable"))
    assert result.updated == 1
    await wait_state(db, "retry", event_id, TaskState.COMPLETED, timeout=10)
    assert calls == [1, 2]


@pytest.mark.parametrize(
    ("call", "error"),
    [
        ({}, "give event ids or a filter"),
        ({"event_ids": []}, "event_ids is empty"),
        ({"event_ids": "event_1"}, "not one string"),
        ({"filter": TaskFilter(), "batch_size": 0}, "batch_size"),
    ],
)
async def test_bad_selections_are_refused_before_any_change(
    app: kanthorq.App, db: asyncpg.Connection, call: dict[str, object], error: str
) -> None:
    _, ids = await arrange(app, db, [("order.x", TaskState.AVAILABLE)])
    with pytest.raises(ConfigError, match=error):
        await app.admin.cancel("ops", **call)  # type: ignore[arg-type]
    assert await states(db, ids) == [TaskState.AVAILABLE]


async def test_bad_filters_and_unknown_consumers(app: kanthorq.App) -> None:
    with pytest.raises(ConfigError, match="unknown task state"):
        TaskFilter.build(states="sleeping")
    with pytest.raises(kanthorq.errors.InvalidSubject):
        TaskFilter.build(subject="order..x")
    with pytest.raises(UnknownConsumer, match="nobody"):
        await app.admin.cancel("nobody", filter=TaskFilter())


async def test_cli_cancel_resume_retry(
    app: kanthorq.App, db: asyncpg.Connection, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, ids = await arrange(
        app, db, [("order.x", TaskState.AVAILABLE), ("order.y", TaskState.RETRYABLE)]
    )
    base = ["--dsn", dsn, "--consumer", "ops"]
    code = await asyncio.to_thread(
        main, ["tasks", "cancel", *base, "--state", "available", "--json"]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out) == {
        "operation": "cancel",
        "updated": 1,
        "skipped": {},
    }
    assert await asyncio.to_thread(main, ["tasks", "retry", *base, ids[1]]) == 0
    assert capsys.readouterr().out.strip() == "retry: 1 updated"
    assert await asyncio.to_thread(main, ["tasks", "resume", *base, "--all"]) == 0
    assert (
        capsys.readouterr().out.strip()
        == "resume: 1 updated; left alone: 1 wrong state (available)"
    )
    assert await states(db, ids) == [TaskState.AVAILABLE, TaskState.AVAILABLE]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tasks", "cancel", "--consumer", "ops"], "needs EVENT_IDs, a filter"),
        (["tasks", "cancel", "--consumer", "ops", "--all", "x"], "do not combine"),
        (["tasks", "cancel", "--consumer", "ops", "--state", "nope"], "unknown task state"),
        (["tasks", "resume", "--consumer", "nobody", "--all"], "no consumer named 'nobody'"),
    ],
)
async def test_cli_bad_task_operations_exit_2(
    app: kanthorq.App,
    dsn: str,
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert await asyncio.to_thread(main, [*argv, "--dsn", dsn]) == 2
    assert message in capsys.readouterr().err


async def test_cancelled_tasks_are_never_claimed(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app(poll_interval=60)
    ran: list[str] = []

    @app.subscribe("later.>", consumer="later")
    async def handle(msg: kanthorq.Message) -> None:
        ran.append(msg.event.id)

    await start_app(app)
    event_id = await app.publish("later.x", delay=1)
    await wait_state(db, "later", event_id, TaskState.AVAILABLE)
    assert (await app.admin.cancel("later", [event_id])).updated == 1
    control = await app.publish("later.y", delay=1.2)
    await wait_state(db, "later", control, TaskState.COMPLETED)
    assert ran == [control]
