"""The handlers a worker runs, each with its task's deadline.

A handler that outlives its deadline (the visibility timeout, or what ``msg.extend`` asked
for) has lost its task: a rescue makes it runnable again, and another worker may be running
it already. So it is cancelled, and its attempt is recorded as failed. A handler that
ignores the cancellation cannot be stopped; it stops counting against the consumer's
concurrency (so it cannot take a slot forever) and is reported, with its consumer and event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

from kanthorq.message import Message

logger = logging.getLogger(__name__)

CANCEL_GRACE = 5.0  # how long a cancelled handler may take to unwind before it is "stuck"


class Handlers:
    """The running handlers of one consumer, by their asyncio tasks."""

    def __init__(self, consumer: str, *, cancel_grace: float = CANCEL_GRACE) -> None:
        self._consumer = consumer
        self._grace = cancel_grace
        self._messages: dict[asyncio.Task[None], Message] = {}
        self._deadlines: dict[asyncio.Task[None], float] = {}  # monotonic
        self._by_attempt: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._timed_out: dict[asyncio.Task[None], float] = {}  # cancelled at (monotonic)
        self._started: dict[asyncio.Task[None], float] = {}  # monotonic
        self.stuck: dict[asyncio.Task[None], Message] = {}  # ignored cancellation

    def __len__(self) -> int:
        """The handlers that count against concurrency (not the stuck ones)."""
        return len(self._messages)

    def __iter__(self) -> Iterator[asyncio.Task[None]]:
        return iter(list(self._messages))

    def items(self) -> list[tuple[asyncio.Task[None], Message]]:
        return list(self._messages.items())

    def add(self, task: asyncio.Task[None], msg: Message, seconds: float) -> None:
        self._messages[task] = msg
        now = self._started[task] = time.monotonic()
        self._deadlines[task] = now + seconds
        self._by_attempt[_key(msg)] = task

    def discard(self, task: asyncio.Task[None]) -> float:
        """The handler finished (or was stuck and has finished at last): how long it ran."""
        took = time.monotonic() - self._started.pop(task, time.monotonic())
        msg = self._messages.pop(task, None) or self.stuck.pop(task, None)
        self._deadlines.pop(task, None)
        self._timed_out.pop(task, None)
        if msg is not None and self._by_attempt.get(_key(msg)) is task:
            del self._by_attempt[_key(msg)]
        return took

    def extended(self, msg: Message, seconds: float) -> None:
        """``msg.extend(seconds)`` moved the task's deadline: follow it."""
        task = self._by_attempt.get(_key(msg))
        if task is not None and task in self._deadlines:
            at = time.monotonic() + seconds
            self._deadlines[task] = max(self._deadlines[task], at)

    def timed_out(self, task: asyncio.Task[None] | None) -> bool:
        """Whether ``task`` was cancelled for running past its deadline."""
        return task is not None and task in self._timed_out

    def check(self) -> float | None:
        """Cancel the handlers past their deadline, and set aside those that ignored the
        cancellation for longer than the grace; when to check again (monotonic), or None."""
        now = time.monotonic()
        for task, at in list(self._timed_out.items()):
            if now >= at + self._grace and task in self._messages:
                msg = self._messages.pop(task)
                self.stuck[task] = msg
                logger.error(
                    "consumer %s: the handler of event %s (attempt %d) ignored its "
                    "cancellation for %.0fs; it no longer counts against concurrency, and "
                    "its task is rescued for another attempt",
                    self._consumer,
                    msg.task.event_id,
                    msg.task.attempt_count,
                    self._grace,
                    extra=_fields(self._consumer, msg),
                )
        for task, deadline in list(self._deadlines.items()):
            if now >= deadline and task not in self._timed_out and task in self._messages:
                self._cancel(task, now)
        pending = [d for t, d in self._deadlines.items() if t not in self._timed_out]
        pending += [at + self._grace for t, at in self._timed_out.items() if t in self._messages]
        return min(pending, default=None)

    def _cancel(self, task: asyncio.Task[None], now: float) -> None:
        msg = self._messages[task]
        self._timed_out[task] = now
        logger.warning(
            "consumer %s: the handler of event %s (attempt %d) ran past its task's deadline; "
            "cancelling it",
            self._consumer,
            msg.task.event_id,
            msg.task.attempt_count,
            extra=_fields(self._consumer, msg),
        )
        task.cancel()


def _key(msg: Message) -> tuple[str, int]:
    return msg.task.event_id, msg.task.attempt_count


def _fields(consumer: str, msg: Message) -> dict[str, object]:
    return {
        "consumer": consumer,
        "event_id": msg.task.event_id,
        "subject": msg.event.subject,
        "attempt": msg.task.attempt_count,
    }
