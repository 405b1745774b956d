"""msg.extend(seconds): a heartbeat that keeps a long handler's task from being rescued."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

import kanthorq
from kanthorq import TaskState
from kanthorq.errors import ConfigError
from tests.conftest import Running, task_table, wait_state, wait_until

AppFactory = Callable[..., kanthorq.App]
Starter = Callable[..., Awaitable[Running]]
VT = 30.0


async def test_an_extended_task_outlives_the_visibility_timeout_and_a_plain_one_does_not(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app(poll_interval=60)
    release = asyncio.Event()
    results: dict[str, bool] = {}

    @app.subscribe("long.>", consumer="long", visibility_timeout=VT, concurrency=5)
    async def handle(msg: kanthorq.Message) -> None:
        if msg.event.subject == "long.extended":
            results["extended"] = await msg.extend(600)
        await release.wait()

    running = await start_app(app)
    extended = await app.publish("long.extended")
    plain = await app.publish("long.plain")
    await wait_state(db, "long", plain, TaskState.RUNNING)
    await wait_until(lambda: "extended" in results)
    assert results["extended"] is True
    table = await task_table(db, "long")
    row = await db.fetchrow(
        f"SELECT attempted_at, deadline_at, kanthorq_now_ms() AS now FROM {table} "
        "WHERE event_id = $1",
        extended,
    )
    # the deadline is 600 s away, not 30 s; attempted_at still tells when it was claimed
    assert row["deadline_at"] >= row["now"] + 595_000
    assert row["now"] - 10_000 <= row["attempted_at"] <= row["now"]

    # 100 s pass for both tasks: the plain one is past its timeout, the extended one is not
    await db.execute(
        f"UPDATE {table} SET attempted_at = attempted_at - 100000, "
        "deadline_at = deadline_at - 100000"
    )
    worker = running.app.workers["long"]
    retried, discarded = await worker.queries.rescue(db, 5)
    assert (retried, discarded) == (1, [])
    states = dict(await db.fetch(f"SELECT event_id, state FROM {table}"))
    assert states == {extended: TaskState.RUNNING, plain: TaskState.RETRYABLE}
    release.set()
    await wait_state(db, "long", extended, TaskState.COMPLETED)


async def test_extend_after_a_rescue_or_an_ack_changes_nothing(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app(poll_interval=60)
    rescued = asyncio.Event()
    results: list[bool] = []

    @app.subscribe("stale.>", consumer="stale", visibility_timeout=VT, max_retries=0)
    async def handle(msg: kanthorq.Message) -> None:
        if msg.event.subject == "stale.rescued":
            await rescued.wait()
            results.append(await msg.extend(600))
        else:
            await msg.ack()
            results.append(await msg.extend(600))

    await start_app(app)
    acked = await app.publish("stale.acked")
    await wait_until(lambda: len(results) == 1)
    assert results == [False]
    await wait_state(db, "stale", acked, TaskState.COMPLETED)

    event_id = await app.publish("stale.rescued")
    await wait_state(db, "stale", event_id, TaskState.RUNNING)
    table = await task_table(db, "stale")
    await db.execute(f"UPDATE {table} SET state = 102 WHERE event_id = $1", event_id)
    before = await db.fetchrow(f"SELECT * FROM {table} WHERE event_id = $1", event_id)
    rescued.set()
    await wait_until(lambda: len(results) == 2)
    assert results[1] is False
    after = await db.fetchrow(f"SELECT * FROM {table} WHERE event_id = $1", event_id)
    assert after["attempted_at"] == before["attempted_at"]
    assert after["deadline_at"] == before["deadline_at"]


@pytest.mark.parametrize("seconds", [0, -1, float("inf"), float("nan"), True, "5", 1e13])
async def test_extend_refuses_bad_seconds(
    make_app: AppFactory, start_app: Starter, seconds: object
) -> None:
    app = make_app(poll_interval=60)
    errors: list[BaseException] = []

    @app.subscribe("bad.>", consumer="bad")
    async def handle(msg: kanthorq.Message) -> None:
        try:
            await msg.extend(seconds)  # type: ignore[arg-type]
        except ConfigError as exc:
            errors.append(exc)

    await start_app(app)
    await app.publish("bad.x")
    await wait_until(lambda: errors)
    assert "extend(seconds)" in str(errors[0])
