"""The data the dashboard's tests look at: one stream, a consumer ``email`` with tasks in
several states (a failing one with a traceback, a Go error record), and an event whose
subject, body, metadata and error try HTML and script injection."""

from __future__ import annotations

import json
from dataclasses import dataclass

import asyncpg

import kanthorq
from kanthorq import TaskState
from kanthorq.store import ConsumerSpec
from tests.conftest import converted, registry, task_table

SPEC = ConsumerSpec("email", "default", ("order.>",), (), 4, 300_000)
# a subject cannot hold '>', '.', '*' or white space: an unclosed tag takes the next '>'
INJECTED_SUBJECT = "order.<img/src=x/onerror=window.__kq_pwned=1//"
INJECTED_BODY = b'{"note": "</pre><script>window.__kq_pwned = 2</script><b>bold</b>"}'
INJECTED_ERROR = '<script>window.__kq_pwned = 3</script> "quoted" & <i>italic</i>'
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "app.py", line 12, in handler\n'
    '    raise ValueError("payment gateway said no")\n'
    "ValueError: payment gateway said no\n"
)


@dataclass
class Arranged:
    ids: dict[str, str]  # name -> event id
    table: str  # the quoted task table of email


async def arrange(app: kanthorq.App, db: asyncpg.Connection) -> Arranged:
    """Publish and convert; then put the tasks in their states, as workers would have."""
    queries = await registry(app.pool, app.dsn).consumer(SPEC)
    names = ["ok1", "ok2", "failing", "gone", "wait1", "wait2", "wait3", "go", "injected"]
    ids: dict[str, str] = {}
    for name in names:
        if name == "injected":
            ids[name] = await app.publish(
                INJECTED_SUBJECT, INJECTED_BODY, metadata={"<b>key</b>": "<script>x</script>"}
            )
        else:
            ids[name] = await app.publish(f"order.{name}", {"order_id": name, "amount": 42})
    await converted(queries, app.pool, 1000)
    table = await task_table(db, "email")
    now = await db.fetchval("SELECT kanthorq_now_ms()")
    error = json.dumps(
        {
            "attempt": 1,
            "error": "ValueError: payment gateway said no",
            "at": now - 90_000,
            "traceback": TRACEBACK,
        }
    )
    go_error = json.dumps(
        {
            "at": now - 30_000,
            "error": "dial tcp: refused",
            "stack": "goroutine 1 [running]:\nmain.handle()\n\t/app/main.go:42",
        }
    )
    hostile = json.dumps(
        {"attempt": 1, "error": INJECTED_ERROR, "at": now - 60_000, "traceback": INJECTED_ERROR}
    )
    updates = {
        "ok1": (TaskState.COMPLETED, 1, now - 120_000, now - 120_000, []),
        "ok2": (TaskState.COMPLETED, 1, now - 60_000, now - 60_000, []),
        "failing": (TaskState.RETRYABLE, 1, 0, now + 3_600_000, [error]),
        "gone": (TaskState.DISCARDED, 4, now - 30_000, now - 30_000, [error, error]),
        "go": (TaskState.RETRYABLE, 0, 0, now + 3_600_000, [go_error]),
        "injected": (TaskState.RETRYABLE, 1, 0, now + 3_600_000, [hostile]),
    }
    for name, (state, attempts, finalized, schedule, errors) in updates.items():
        await db.execute(
            f"UPDATE {table} SET state = $2, attempt_count = $3, finalized_at = $4, "
            "schedule_at = $5, attempted_error = $6::JSONB[], "
            "attempted_at = CASE WHEN $3::SMALLINT > 0 THEN $7::BIGINT ELSE 0 END "
            "WHERE event_id = $1",
            ids[name],
            int(state),
            attempts,
            finalized,
            schedule,
            errors,
            now - 95_000,
        )
    # wait1..3 stay available, due in an hour (no worker runs in these tests)
    await db.execute(f"UPDATE {table} SET schedule_at = $1 WHERE state = 1", now + 3_600_000)
    return Arranged(ids, table)


async def states(db: asyncpg.Connection, table: str, ids: list[str]) -> list[str]:
    found = dict(await db.fetch(f"SELECT event_id, state FROM {table}"))
    return [TaskState(found[i]).name.lower() for i in ids]
