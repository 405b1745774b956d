"""Item 9: publishes and acks in the caller's transaction live and die with it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
import pytest

import kanthorq
from kanthorq import TaskState
from tests.conftest import Running, stream_table, task_row, task_table, wait_state, wait_until
from tests.reliability.conftest import age_running

Starter = Callable[..., Awaitable[Running]]
LEDGER = "INSERT INTO ledger (event_id, seq, attempt, pid) VALUES ($1, $2, $3, 0)"
VT = 30.0


class RollBack(Exception):
    pass


async def test_rolled_back_publish_leaves_nothing(
    dsn: str, ledger_db: asyncpg.Connection, start_app: Starter
) -> None:
    db = ledger_db
    app = kanthorq.App(dsn, poll_interval=0.5)
    calls: list[str] = []

    @app.subscribe("job.>", consumer="jobs")
    async def handle(msg: kanthorq.Message) -> None:
        calls.append(msg.event.id)

    await start_app(app)
    async with app.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        rolled = [await app.publish("job.run", {"seq": 1}, conn=conn)]
        rolled += await app.publish_many([("job.run", {"seq": n}) for n in (2, 3)], conn=conn)
        # committed while the doomed transaction is still open: held back, never lost
        sentinel = await app.publish("job.run", {"seq": 4})
        await tx.rollback()
    after = await app.publish("job.run", {"seq": 5})

    await wait_until(lambda: sentinel in calls and after in calls, timeout=10)
    assert sorted(calls) == sorted([sentinel, after])
    events = await stream_table(db)
    assert (
        await db.fetchval(f"SELECT count(*) FROM {events} WHERE id = ANY($1::TEXT[])", rolled) == 0
    )
    tasks = await task_table(db, "jobs")
    assert await db.fetchval(f"SELECT count(*) FROM {tasks}") == 2
    assert (
        await db.fetchval(f"SELECT count(*) FROM {tasks} WHERE event_id = ANY($1::TEXT[])", rolled)
        == 0
    )


@pytest.mark.parametrize("then", ["returns", "raises"])
async def test_ack_in_rolled_back_transaction(
    then: str, dsn: str, ledger_db: asyncpg.Connection, start_app: Starter
) -> None:
    """The ack rolls back with the handler's writes. A handler that then returns leaves its
    task running, to be rescued after the visibility timeout; one that raises is retried."""
    db = ledger_db
    app = kanthorq.App(dsn, poll_interval=0.5)
    finished: list[int] = []
    acked: list[bool] = []

    @app.subscribe("job.>", consumer="jobs", visibility_timeout=VT, backoff=kanthorq.Fixed(delay=0))
    async def handle(msg: kanthorq.Message) -> None:
        attempt, seq = msg.task.attempt_count, msg.json()["seq"]
        try:
            async with app.pool.acquire() as conn, conn.transaction():
                await conn.execute(LEDGER, msg.event.id, seq, attempt)
                acked.append(await msg.ack(conn=conn))
                if seq == 1 and attempt == 1:
                    raise RollBack
        except RollBack:
            if then == "raises":
                raise
        finally:
            if seq == 1:
                finished.append(attempt)

    await start_app(app)
    event_id = await app.publish("job.run", {"seq": 1})
    await wait_until(lambda: 1 in finished, timeout=10)
    assert acked[0] is True  # inside its transaction the ack did apply

    if then == "returns":
        # another event goes all the way through: the worker had every chance to settle
        # the first one, and did not
        other = await app.publish("job.run", {"seq": 2})
        await wait_state(db, "jobs", other, TaskState.COMPLETED)
        row = await task_row(db, "jobs", event_id)
        assert row is not None
        assert (row["state"], row["attempt_count"], row["finalized_at"]) == (2, 1, 0)
        assert await db.fetchval("SELECT count(*) FROM ledger WHERE event_id = $1", event_id) == 0
        assert await age_running(db, "jobs", "event_id = $2", int(VT * 1000) + 1000, event_id) == 1

    row = await wait_state(db, "jobs", event_id, TaskState.COMPLETED)
    assert row["attempt_count"] == 2
    ledger = await db.fetch("SELECT attempt FROM ledger WHERE event_id = $1", event_id)
    assert [r["attempt"] for r in ledger] == [2]  # the rolled-back attempt left no write
    assert finished == [1, 2]
