"""The gauges read from the database: each consumer's lag and its tasks per state.

They are read with ``app.admin.show(stream)`` (one snapshot per stream, exact up to 10,000
and estimated above), at most once per ``interval`` seconds, in the background, while the
app's workers step; never when Prometheus scrapes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from kanthorq.metrics.instruments import Instruments
from kanthorq.subscription import Subscription

if TYPE_CHECKING:
    from kanthorq.app import App

logger = logging.getLogger(__name__)


class ConsumerGauges:
    def __init__(self, app: App, made: Instruments, interval: float) -> None:
        self._app = app
        self._made = made
        self._interval = interval
        self._streams: dict[str, set[str]] = {}  # stream name: its consumers run here
        self._next = 0.0  # time.monotonic() of the next refresh
        self._task: asyncio.Task[None] | None = None
        self.refreshed = 0  # refreshes done (for tests)

    def due(self, consumer: Subscription) -> None:
        """A worker of ``consumer`` stepped, or was polled: refresh in the background when
        it is time."""
        self._streams.setdefault(consumer.stream, set()).add(consumer.name)
        now = time.monotonic()
        if now < self._next or self._task is not None:
            return
        self._next = now + self._interval
        self._task = asyncio.get_running_loop().create_task(self._refresh())
        self._task.add_done_callback(self._done)

    def _done(self, _task: asyncio.Task[None]) -> None:
        self._task = None

    async def _refresh(self) -> None:
        for stream, names in list(self._streams.items()):
            try:
                overview = await self._app.admin.show(stream)
            except Exception as exc:  # a database error, or the app closing meanwhile
                self._made.db_errors["inspect"] = self._made.db_errors.get("inspect", 0) + 1
                logger.debug(
                    "metrics: could not read stream %s: %s: %s", stream, type(exc).__name__, exc
                )
                continue
            for consumer in overview.consumers:
                if consumer.name not in names:
                    continue
                if consumer.lag is not None:
                    self._made.lag[consumer.name] = consumer.lag
                for state, count in consumer.tasks.items():
                    self._made.tasks[consumer.name, state] = count
        self.refreshed += 1
