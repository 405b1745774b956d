"""Checks of the times and durations that the API takes, shared by its entry points."""

from __future__ import annotations

import math
from datetime import datetime

from kanthorq.errors import MAX_DELAY, ConfigError


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
