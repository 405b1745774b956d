"""The workers' poll: one statement per poll interval for every consumer of the process.

Wake-ups (LISTEN/NOTIFY) bring new events at once; the poll is the safety net for what no
notification announces: events another client wrote (KanthorQ for Go, ``psql``), tasks that
become runnable (a retry's backoff, another process's rescue), and running tasks past
their deadline (a dead worker's). Each consumer asks nothing of the database on its own
while idle: the poller asks for all of them at once (sql/queries/poll_consumer.sql, one
part per consumer) and wakes only those with something to do. So a process costs one
statement per poll interval however many consumers it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from kanthorq.database import DB_ERRORS
from kanthorq.sqlfiles import render

logger = logging.getLogger(__name__)

MAX_BACKOFF = 5.0
_PARAM = re.compile(r"\$1\b")


@dataclass(frozen=True, slots=True)
class Polled:
    """What the poll found for one consumer."""

    convert: bool  # events to convert (or a cursor to take over)
    due_in_ms: int | None  # when its next runnable task is due (<= 0: now; None: none)
    rescue: bool  # a running task is past its deadline


class Polls(Protocol):
    """A worker, as the poller sees it."""

    @property
    def name(self) -> str: ...

    @property
    def stream_id(self) -> str: ...

    @property
    def consumer_id(self) -> str: ...

    def polled(self, found: Polled) -> None: ...


def statement(consumers: Sequence[Polls]) -> str:
    """The poll of ``consumers``: one part each, its name the parameter of its number."""
    parts = [
        _PARAM.sub(
            f"${n}",
            render("poll_consumer", stream_id=c.stream_id, consumer_id=c.consumer_id),
        )
        for n, c in enumerate(consumers, 1)
    ]
    return "\nUNION ALL\n".join(f"({_strip_comments(p)})" for p in parts)


def _strip_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))


class Poller:
    def __init__(self, pool: asyncpg.Pool, consumers: Sequence[Polls], interval: float) -> None:
        self._pool = pool
        self._consumers = {c.name: c for c in consumers}
        self._names = [c.name for c in consumers]
        self._statement = statement(consumers) if consumers else ""
        self._interval = interval
        self.passes = 0  # polls made (a test's milestone)
        self.answered_at: float | None = None  # time.monotonic() of the last answer

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.0
        while not stop.is_set() and self._names:
            wait = self._interval
            try:
                await self.poll()
                backoff = 0.0
            except DB_ERRORS as exc:
                backoff = min(max(backoff * 2, 0.1), MAX_BACKOFF)
                wait = max(backoff, 0.1)
                logger.warning(
                    "poll failed, retrying in %.1fs: %s: %s", wait, type(exc).__name__, exc
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    async def poll(self) -> None:
        """Ask once for every consumer, and tell each what was found."""
        rows = await self._pool.fetch(self._statement, *self._names)
        self.passes += 1
        self.answered_at = time.monotonic()
        for row in rows:
            self._consumers[row["name"]].polled(
                Polled(row["convert"], row["due_in"], row["rescue"])
            )
