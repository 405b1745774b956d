"""Scheduled events: the time a task becomes runnable travels with its event.

``publish(..., delay=)`` or ``publish(..., at=)`` stores the time, in milliseconds since the
epoch, under the reserved metadata key :data:`SCHEDULE_KEY`. Conversion reads it and sets
each consumer's task ``schedule_at``, so every consumer runs the task at that time, and a
client in another language schedules an event by setting the same key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kanthorq.checks import is_seconds
from kanthorq.errors import MAX_DELAY, ConfigError, InvalidPayload

SCHEDULE_KEY = "kanthorq.schedule_at"
MAX_SCHEDULE_MS = 10**15  # about the year 33658: far enough, and well inside a BIGINT


def schedule_ms(delay: float | None, at: datetime | None, now_ms: int) -> int | None:
    """When the event's tasks become runnable, in ms since the epoch; None for now.
    ``now_ms``: the time now by the database's clock (:class:`kanthorq.clock.DbClock`),
    which the conversion and the claims compare the schedule with."""
    if delay is not None and at is not None:
        raise ConfigError("give delay= or at=, not both")
    if delay is not None:
        if not is_seconds(delay):
            raise ConfigError(
                f"delay must be a number of seconds from 0 to {MAX_DELAY:g}, got {delay!r}"
            )
        return now_ms + round(delay * 1000)
    if at is not None:
        if not isinstance(at, datetime):
            raise ConfigError(f"at must be a datetime, got {type(at).__name__}")
        if at.tzinfo is None or at.utcoffset() is None:
            raise ConfigError(
                "at must be a timezone-aware datetime (e.g. datetime.now(timezone.utc)); "
                f"got the naive {at.isoformat()}"
            )
        ms = round(at.timestamp() * 1000)
        if not 0 <= ms <= MAX_SCHEDULE_MS:
            raise ConfigError(f"at is out of range: {at.isoformat()}")
        return ms
    return None


def with_schedule(metadata: Any, ms: int | None) -> Any:
    """``metadata`` with the schedule added; a schedule the caller set under the reserved key
    must be a whole number of milliseconds."""
    if ms is None:
        if isinstance(metadata, dict) and SCHEDULE_KEY in metadata:
            _check_reserved(metadata[SCHEDULE_KEY])
        return metadata
    if metadata is None:
        return {SCHEDULE_KEY: ms}
    if not isinstance(metadata, dict):
        return metadata  # encode_metadata names the problem
    if SCHEDULE_KEY in metadata:
        raise InvalidPayload(
            f"metadata key {SCHEDULE_KEY!r} is reserved for delay= and at=; give one, not both"
        )
    return {**metadata, SCHEDULE_KEY: ms}


def _check_reserved(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SCHEDULE_MS:
        raise InvalidPayload(
            f"metadata key {SCHEDULE_KEY!r} is the time the event's tasks become runnable: "
            f"an int of milliseconds since the epoch, got {value!r}"
        )
