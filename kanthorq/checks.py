"""Checks of the times and durations that the API takes, shared by its entry points."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from kanthorq.errors import MAX_DELAY, ConfigError


class _Fetcher(Protocol):
    async def fetchval(self, query: str, *args: object) -> object: ...


def is_seconds(value: object, *, above_zero: bool = False) -> bool:
    """Whether ``value`` is a finite number of seconds from 0 (or above 0) to MAX_DELAY."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    low_ok = value > 0 if above_zero else value >= 0
    return low_ok and value <= MAX_DELAY and math.isfinite(value)


def aware_ms(value: object, what: str) -> int:
    """``value``, a timezone-aware datetime, in milliseconds since the epoch."""
    if not isinstance(value, datetime):
        raise ConfigError(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConfigError(f"{what} must be a timezone-aware datetime, got {value.isoformat()}")
    return round(value.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Moment:
    """A point in time that an operation compares with stored times: an instant (``ms``),
    or an age (``age_ms`` before now by the database's clock, never this host's)."""

    ms: int | None = None
    age_ms: int | None = None

    async def resolve(self, db: _Fetcher) -> int:
        """Milliseconds since the epoch."""
        if self.ms is not None:
            return self.ms
        now = await db.fetchval("SELECT kanthorq_now_ms()")
        assert isinstance(now, int)
        assert self.age_ms is not None
        return now - self.age_ms


def moment(value: object, what: str) -> Moment:
    """``value``: a timezone-aware datetime, or a timedelta meaning that long ago."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
        if not is_seconds(seconds):
            raise ConfigError(f"{what} as an age must be from 0 to {MAX_DELAY:g}s, got {value}")
        return Moment(age_ms=round(seconds * 1000))
    if not isinstance(value, datetime):
        raise ConfigError(
            f"{what} must be a datetime or a timedelta (an age), got {type(value).__name__}"
        )
    return Moment(ms=aware_ms(value, what))
