"""Batched completions: acks are flushed every few milliseconds, or at once when a batch is full.

A completion is fenced on the attempt its claim counted, so flushing twice, or flushing a
stale attempt, changes nothing. A failed flush is kept and tried again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection

import asyncpg

from kanthorq.database import DB_ERRORS
from kanthorq.hooks import Hooks
from kanthorq.store import ConsumerQueries

logger = logging.getLogger(__name__)
_RETRY_AFTER = 0.5


class Completer:
    def __init__(
        self,
        queries: ConsumerQueries,
        pool: asyncpg.Pool,
        *,
        max_batch: int = 100,
        delay: float = 0.005,
        hooks: Hooks | None = None,
    ) -> None:
        self._queries = queries
        self._pool = pool
        self._max_batch = max_batch
        self._delay = delay
        self._hooks = Hooks() if hooks is None else hooks
        # told once per flush which (event id, attempt) pairs it wrote and which changed
        self.on_flush: Callable[[Collection[tuple[str, int]], set[tuple[str, int]]], None] | None
        self.on_flush = None
        self._pending: dict[tuple[str, int], asyncio.Future[bool]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()
        self._closed = False

    def add(self, event_id: str, attempt: int) -> asyncio.Future[bool]:
        """Queue a completion; the future tells whether the task changed."""
        loop = asyncio.get_running_loop()
        if self._closed:  # a handler that outlived the shutdown: its task is rescued later
            late: asyncio.Future[bool] = loop.create_future()
            late.set_result(False)
            return late
        key = (event_id, attempt)
        future = self._pending.get(key)
        if future is None:
            future = self._pending[key] = loop.create_future()
        if len(self._pending) >= self._max_batch:
            self._start_flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._delay, self._start_flush)
        return future

    def _start_flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        task = asyncio.get_running_loop().create_task(self._flush(self._take()))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    def _take(self) -> dict[tuple[str, int], asyncio.Future[bool]]:
        batch, self._pending = self._pending, {}
        return batch

    async def _flush(self, batch: dict[tuple[str, int], asyncio.Future[bool]]) -> None:
        ids = [key[0] for key in batch]
        attempts = [key[1] for key in batch]
        try:
            changed = await self._queries.complete(self._pool, ids, attempts)
        except DB_ERRORS as exc:
            self._hooks.db_error("complete", exc)
            logger.warning(
                "could not complete %d tasks, will retry: %s: %s",
                len(batch),
                type(exc).__name__,
                exc,
            )
            for key, future in batch.items():
                self._pending.setdefault(key, future)
            if self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(_RETRY_AFTER, self._start_flush)
            return
        # matched on (event id, attempt): a stale attempt and the current one of the same task
        # can share a batch, and only the current one completes
        for key, future in batch.items():
            event_id, attempt = key
            done = key in changed
            if not done:
                logger.warning(
                    "stale completion ignored: task %s attempt %d is no longer running "
                    "(rescued after the visibility timeout, or settled elsewhere)",
                    event_id,
                    attempt,
                    extra={"consumer": self._queries.name, "event_id": event_id},
                )
            if not future.done():
                future.set_result(done)
        if self.on_flush is not None:
            self.on_flush(batch.keys(), changed)

    async def close(self, timeout: float = 5.0) -> None:
        """Flush everything queued; give up on what the database refuses for ``timeout`` s."""
        self._closed = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (self._pending or self._flushing) and loop.time() < deadline:
            if self._flushing:
                await asyncio.wait(list(self._flushing), timeout=max(deadline - loop.time(), 0))
            else:
                self._start_flush()
                await asyncio.sleep(0)
            if self._pending and not self._flushing:
                await asyncio.sleep(0.1)  # the last flush failed: give the database a moment
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for future in self._pending.values():
            if not future.done():
                future.set_result(False)
