"""The database's clock, as seen from this process.

Every time kanthorq stores (an event's id and ``created_at``, a delayed event's schedule, an
error record's ``at``) is compared later with times the database writes
(``kanthorq_now_ms()``), so it must come from the database's clock, not from this host's,
which may run minutes fast or slow. :class:`DbClock` reads the database's time once when
the app opens and follows it with the monotonic clock, which a step of this host's wall
clock does not move. It reads it again every :data:`RESYNC` seconds, when asked to.
"""

from __future__ import annotations

import time
from typing import Protocol

RESYNC = 300.0  # seconds between readings of the database's time


class _Fetcher(Protocol):
    async def fetchval(self, query: str, *args: object) -> object: ...


def wall_ms() -> int:
    """This host's wall clock, in ms since the epoch."""
    return time.time_ns() // 1_000_000


class DbClock:
    """Milliseconds since the epoch by the database's clock; this host's until synced."""

    def __init__(self) -> None:
        self._db_ms: float | None = None  # the database's time at ...
        self._mono = 0.0  # ... this monotonic time
        self.offset_ms = 0  # the database's clock minus this host's, at the last reading

    @property
    def synced(self) -> bool:
        return self._db_ms is not None

    def stale(self) -> bool:
        """Never read, or read more than :data:`RESYNC` seconds ago."""
        return self._db_ms is None or time.monotonic() - self._mono > RESYNC

    async def sync(self, db: _Fetcher) -> None:
        """Read the database's time; its reply is taken to describe the middle of the round
        trip (off by at most half of it)."""
        before = time.monotonic()
        value = await db.fetchval("SELECT kanthorq_now_ms()")
        after = time.monotonic()
        if not isinstance(value, int):
            raise TypeError(f"kanthorq_now_ms() returned {value!r}")
        self._db_ms = float(value)
        self._mono = (before + after) / 2
        self.offset_ms = round(value - (wall_ms() - (after - self._mono) * 1000))

    def now_ms(self) -> int:
        if self._db_ms is None:
            return wall_ms()
        return round(self._db_ms + (time.monotonic() - self._mono) * 1000)
