"""Group commit: concurrent ``publish()`` calls of one stream written together.

A publish that brings no ``conn=`` (and no key) writes its event at once when nothing else
of its stream is being written by this process. Publishes that arrive while a write is in
flight wait, and are then written together: one INSERT and one commit for all of them,
instead of one each. Every call still returns only after its own event has committed, and
gets the error if its write fails. Commits are what single-event publishing waits for
(each flushes the WAL), so under concurrency this writes more events per second than one
transaction per event, and alone it adds nothing. A call that is cancelled while it waits
may still have its event written (as a cancelled INSERT may commit).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from kanthorq.publish_errors import noting_connect_failures, publish_error

Row = tuple[str, str, bytes, str, int]  # id, subject, body, metadata, created_at
# writes rows in one statement; True when that statement notified the stream's workers
WriteMany = Callable[[Sequence[Row]], Awaitable[bool]]


class GroupWriter:
    """The writes of one stream in this process: one in flight, the rest gathered."""

    def __init__(self, write: WriteMany, errors: tuple[type[BaseException], ...]) -> None:
        self._write = write
        self._errors = errors  # what a failed write raises (database and connection errors)
        self._waiting: list[tuple[Row, asyncio.Future[bool]]] = []
        self._busy = False
        self._flusher: asyncio.Task[None] | None = None

    async def write(self, row: Row) -> bool:
        """Write ``row``, with others gathered meanwhile: whether its statement notified."""
        if self._busy:
            done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            self._waiting.append((row, done))
            return await done
        self._busy = True
        try:
            return await self._write([row])  # alone: at once, as one INSERT
        finally:
            self._hand_over()

    def _hand_over(self) -> None:
        """After a write: flush what gathered meanwhile, in the background (the caller whose
        write finished returns now), or stand idle."""
        if self._waiting:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        else:
            self._busy = False

    async def _flush(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                await self._flush_batch(batch)
        finally:
            self._busy = False
            self._flusher = None

    async def _flush_batch(self, batch: list[tuple[Row, asyncio.Future[bool]]]) -> None:
        with noting_connect_failures() as connect_failures:
            try:
                notified = await self._write([row for row, _ in batch])
            except self._errors as exc:
                connecting = any(exc is failure for failure in connect_failures)
                error: BaseException = publish_error(
                    exc, step="write", connecting=connecting, joined=False
                )
                error.__cause__ = exc
            except asyncio.CancelledError:  # the app is closing: the waiters are cancelled too
                for _, done in batch:
                    done.cancel()
                raise
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(notified)
                return
        for _, done in batch:
            if not done.done():
                done.set_exception(error)


def columns(rows: Sequence[Row]) -> list[list[Any]]:
    """``rows`` as the arrays of publish_batch.sql."""
    return [list(column) for column in zip(*rows, strict=True)]
