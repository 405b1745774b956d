"""Claiming ahead: tasks claimed before a handler slot is free, started as slots free up.

A worker that claims only its free slots waits a round trip between a handler finishing and
the next one starting; with quick handlers that round trip, not the handlers, sets the pace.
So it may claim more tasks than it can start (up to 400), and start them the moment slots
free up, while the next claim is on its way. A task claimed ahead ages toward its deadline
while it waits, so it claims only as many ahead as its handlers start (``concurrency``
every average handler time) within 5% of the visibility timeout. Until enough handlers have
finished to know, and when they are slow, nothing is claimed ahead. Nor for a consumer with
limits across workers: a task claimed ahead would hold a share of its budget that another
worker could run now.
"""

from __future__ import annotations

import collections
import time

from kanthorq.store import Claimed

SHARE = 0.05  # of the visibility timeout that a task claimed ahead may spend waiting
WEIGHT = 0.1  # of each new handler time in the running average
WARM_UP = 20  # handler times measured before claiming ahead
MOST = 400  # tasks claimed ahead at most


class Prefetch:
    """The tasks one worker has claimed but not started, with when each was claimed."""

    def __init__(self, concurrency: int, visibility_timeout: float, *, limited: bool) -> None:
        self._concurrency = concurrency
        self._enabled = not limited
        self._limit = SHARE * visibility_timeout  # the longest handler time that allows it
        self._ready: collections.deque[tuple[Claimed, float]] = collections.deque()
        self._average = 0.0
        self._measured = 0

    def __len__(self) -> int:
        return len(self._ready)

    @property
    def ahead(self) -> int:
        """How many tasks may wait, claimed, for a slot now: as many as the handlers start
        within the share of the visibility timeout (``concurrency`` every handler time)."""
        if not self._enabled or self._measured < WARM_UP or self._average > self._limit:
            return 0
        return min(MOST, int(self._concurrency * self._limit / max(self._average, 1e-6)))

    def room(self, running: int) -> int:
        """How many tasks a claim may take now: the free slots, and what may wait ahead."""
        return self._concurrency + self.ahead - running - len(self._ready)

    def low(self) -> bool:
        """Few enough wait that the next claim should be on its way."""
        return len(self._ready) <= self.ahead // 2

    def handler_took(self, seconds: float) -> None:
        self._measured += 1
        self._average += WEIGHT * (seconds - self._average)

    def put(self, items: list[Claimed]) -> None:
        now = time.monotonic()
        self._ready.extend((item, now) for item in items)

    def pop(self) -> tuple[Claimed, float] | None:
        """The next task to start, and the seconds it has waited since its claim."""
        if not self._ready:
            return None
        item, claimed_at = self._ready.popleft()
        return item, time.monotonic() - claimed_at

    def take_all(self) -> list[Claimed]:
        """Every waiting task (to hand back at a shutdown)."""
        items = [item for item, _ in self._ready]
        self._ready.clear()
        return items
