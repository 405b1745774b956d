"""Item 2: a worker that lost its task to a rescue cannot change it afterwards."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

import kanthorq
from kanthorq import TaskState
from kanthorq.errors import StaleTask
from tests.conftest import Running, task_row, wait_state, wait_until
from tests.reliability.conftest import age_running

AppFactory = Callable[..., kanthorq.App]
Starter = Callable[..., Awaitable[Running]]
LEDGER = "INSERT INTO ledger (event_id, seq, attempt, pid) VALUES ($1, $2, $3, $4)"


class Holder:
    """Worker A's handler: it holds its task until told what to do with it."""

    def __init__(self, app: kanthorq.App, action: str) -> None:
        self.app = app
        self.action = action
        self.claimed: asyncio.Future[kanthorq.Message] = asyncio.get_running_loop().create_future()
        self.release = asyncio.Event()
        self.result: object = None
        self.done = asyncio.Event()

    async def __call__(self, msg: kanthorq.Message) -> None:
        self.claimed.set_result(msg)
        await self.release.wait()
        try:
            self.result = await self._act(msg)
        except StaleTask as exc:
            self.result = exc
            raise
        finally:
            self.done.set()

    async def _act(self, msg: kanthorq.Message) -> object:
        if self.action == "ack":
            return await msg.ack()
        if self.action == "nack":
            return await msg.nack("late nack")
        async with self.app.pool.acquire() as conn, conn.transaction():
            await conn.execute(LEDGER, msg.event.id, msg.json()["seq"], msg.task.attempt_count, 1)
            if self.action == "ack_in_tx":
                return await msg.ack(conn=conn)
            return await msg.nack("late nack", conn=conn)


@pytest.mark.parametrize("action", ["ack", "nack", "ack_in_tx", "nack_in_tx"])
async def test_stale_attempt_changes_nothing(
    action: str,
    make_app: AppFactory,
    start_app: Starter,
    ledger_db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = ledger_db
    caplog.set_level(logging.WARNING, logger="kanthorq")
    options = {"consumer": "c", "visibility_timeout": 30, "max_retries": 5, "concurrency": 1}

    worker_a = make_app()
    holder = Holder(worker_a, action)
    worker_a.subscribe("job.>", **options)(_named(holder))
    await start_app(worker_a)
    event_id = await worker_a.publish("job.run", {"seq": 7})
    first = await asyncio.wait_for(holder.claimed, 10)
    assert first.task.attempt_count == 1

    # A's claim is 31 s old now: past the 30 s visibility timeout
    assert await age_running(db, "c", "event_id = $2", 31_000, event_id) == 1

    worker_b = make_app()

    @worker_b.subscribe("job.>", **options)
    async def complete(msg: kanthorq.Message) -> None:
        async with worker_b.pool.acquire() as conn, conn.transaction():
            await conn.execute(LEDGER, msg.event.id, msg.json()["seq"], msg.task.attempt_count, 2)
            await msg.ack(conn=conn)

    await start_app(worker_b)
    won = await wait_state(db, "c", event_id, TaskState.COMPLETED)
    assert won["attempt_count"] == 2

    caplog.clear()
    holder.release.set()
    await asyncio.wait_for(holder.done.wait(), 10)
    await wait_until(lambda: _stale_logged(caplog, event_id), timeout=5)

    if action.endswith("_in_tx"):
        assert isinstance(holder.result, StaleTask), holder.result
    else:
        assert holder.result is False
    final = await task_row(db, "c", event_id)
    assert final is not None
    assert dict(final) == dict(won)  # B's result, untouched: state, attempt, times, errors
    errors = [json.loads(e)["error"] for e in final["attempted_error"]]
    assert len(errors) == 1
    assert "visibility timeout" in errors[0]
    ledger = await db.fetch("SELECT event_id, attempt, pid FROM ledger")
    assert [tuple(r) for r in ledger] == [(event_id, 2, 2)]  # A's writes rolled back


def _stale_logged(caplog: pytest.LogCaptureFixture, event_id: str) -> bool:
    return any(
        "stale" in r.getMessage() and event_id in r.getMessage() and r.levelno == logging.WARNING
        for r in caplog.records
    )


def _named(holder: Holder) -> Callable[[kanthorq.Message], Awaitable[None]]:
    async def hold(msg: kanthorq.Message) -> None:
        await holder(msg)

    return hold
