"""``await drain(app)``: run an app's workers until nothing is left to run now.

The app runs for real (its pool, its workers, its listener) on the database it points at,
until every consumer chosen has converted every event it matches, runs no task, and has no
task due now. Then it shuts down gracefully, and the report says what became of the tasks
that changed while it ran, per consumer. Tasks scheduled later (a ``delay=``, a retry's
backoff) are left alone, unless ``scheduled=True``: then they are made due at once, so
every retry runs now and the drain ends with each task completed, discarded or cancelled.
Whether it is done is read from the database (``app.admin.show()``), never guessed from
time passing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kanthorq.app import App
from kanthorq.checks import is_seconds
from kanthorq.entities import TaskState
from kanthorq.errors import ConfigError, KanthorQError, UnknownConsumer
from kanthorq.publisher import channel

CHECK_EVERY = 0.02  # seconds between two looks at the database
DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class TaskError:
    """One failed attempt: the error as ``"Type: message"``, and its traceback."""

    event_id: str
    attempt: int | None
    error: str
    traceback: str | None = field(default=None, repr=False)


@dataclass(slots=True)
class ConsumerReport:
    """What became of one consumer's tasks during a drain, as lists of event ids.

    ``retried``: failed, and due again later (their backoff); ``scheduled``: not due yet,
    left alone; ``errors``: every failed attempt of the drain, task by task."""

    completed: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    discarded: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    scheduled: list[str] = field(default_factory=list)
    errors: list[TaskError] = field(default_factory=list)

    def errors_of(self, event_id: str) -> list[TaskError]:
        """The failed attempts of one event's task."""
        return [e for e in self.errors if e.event_id == event_id]


class NotDrained(KanthorQError, TimeoutError):
    """The app's tasks were not drained in time. ``left`` says what was still to do, per
    consumer; ``report`` is what happened meanwhile."""

    def __init__(self, message: str, left: list[str], report: dict[str, ConsumerReport]):
        super().__init__(message)
        self.left = left
        self.report = report


_BUCKETS = {
    TaskState.COMPLETED: "completed",
    TaskState.RETRYABLE: "retried",
    TaskState.DISCARDED: "discarded",
    TaskState.CANCELLED: "cancelled",
    TaskState.AVAILABLE: "scheduled",
}


async def drain(
    app: App,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    consumers: Sequence[str] | None = None,
    scheduled: bool = False,
) -> dict[str, ConsumerReport]:
    """Run ``app``'s workers (those of ``consumers``, else all) until no task is runnable
    now; return what happened, per consumer. :class:`NotDrained` when that takes longer
    than ``timeout`` seconds. ``scheduled``: also run the tasks scheduled later, now."""
    if not is_seconds(timeout, above_zero=True):
        raise ConfigError(f"timeout must be a number of seconds above 0, got {timeout!r}")
    names = list(consumers) if consumers else list(app.subscriptions)
    async with app:
        start: int = await app.pool.fetchval("SELECT kanthorq_now_ms()")
        runner = asyncio.get_running_loop().create_task(app.run(consumers))
        try:
            left = await _wait_idle(app, names, runner, timeout, scheduled)
        finally:
            await app.shutdown()
            await asyncio.wait([runner])
        runner.result()  # what run() raised
        report = {name: await _report(app, name, start) for name in names}
    if left:
        raise NotDrained(
            f"not drained within {timeout:g}s: " + "; ".join(left), left=left, report=report
        )
    return report


async def _wait_idle(
    app: App, names: list[str], runner: asyncio.Task[None], timeout: float, scheduled: bool
) -> list[str]:
    """Empty once nothing is left to run now; else, at the timeout, what is left."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if runner.done():
            runner.result()  # run() failed: raise it
            left = await _busy(app, names)
            return [*left, "the app stopped running"] if left else []
        if scheduled:
            await _run_now(app, names)
        left = await _busy(app, names)
        if not left or loop.time() >= deadline:
            return left
        await asyncio.sleep(CHECK_EVERY)


async def _busy(app: App, names: list[str]) -> list[str]:
    """What each consumer still has to do now, read in one snapshot."""
    overview = await app.admin.show()
    found = {c.name: c for c in overview.consumers}
    left = []
    for name in names:
        info = found.get(name)
        if info is None:
            left.append(f"consumer {name} is not registered yet")
            continue
        parts = []
        if info.lag:
            parts.append(f"{info.lag} events to convert")
        if info.tasks.get("running"):
            parts.append(f"{info.tasks['running']} tasks running")
        if info.oldest_due_age_ms is not None:
            parts.append("tasks due now")
        if parts:
            left.append(f"consumer {name}: " + ", ".join(parts))
    return left


async def _run_now(app: App, names: list[str]) -> None:
    """Make the tasks scheduled later due now, and wake the workers for them."""
    for name in names:
        try:
            info = await app.admin.consumer(name)
        except UnknownConsumer:
            continue  # not registered yet
        if await app.pool.fetchval(info.sql("testing_run_now")):
            await app.pool.execute("SELECT pg_notify($1, '')", channel(info.stream_id))


def _task_error(event_id: str, text: str) -> TaskError:
    record: Any = json.loads(text)
    attempt = record.get("attempt")
    return TaskError(
        event_id=event_id,
        attempt=attempt if isinstance(attempt, int) else None,
        error=str(record.get("error", "")),
        traceback=record.get("traceback") or record.get("stack"),
    )


async def _report(app: App, name: str, start: int) -> ConsumerReport:
    report = ConsumerReport()
    try:
        info = await app.admin.consumer(name)
    except UnknownConsumer:
        return report
    for row in await app.pool.fetch(info.sql("testing_report"), start):
        bucket = _BUCKETS.get(row["state"])
        if bucket is not None:
            getattr(report, bucket).append(row["event_id"])
        report.errors.extend(_task_error(row["event_id"], text) for text in row["errors"])
    return report
