"""Durations and times on the command line, one form everywhere.

A duration is a number of seconds (``90``) or a number and a unit (``90s``, ``15m``, ``2h``,
``3d``, ``2w``): ``--delay``, ``--older-than``, and the ages of ``--before`` and ``--since``.
A time is ISO 8601 with its UTC offset (``2026-11-28T10:00:00Z``): ``--at``, and the other
form of ``--before`` and ``--since``. An age is counted back from the database's clock, by
the command that uses it, never from this host's.
"""

from __future__ import annotations

import argparse
import math
import re
from datetime import datetime, timedelta

from kanthorq.errors import MAX_DELAY

_DURATION = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*(s|m|h|d|w)?", re.IGNORECASE)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
DURATIONS = "a duration: 90 (seconds), 90s, 15m, 2h or 3d"
TIMES = "an ISO 8601 time with its offset: 2026-11-28T10:00:00Z"


def _seconds(text: str) -> float | None:
    """The seconds of a duration, or None when ``text`` is not one."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        return None
    value = float(match.group(1)) * _UNITS[(match.group(2) or "").lower()]
    if not (math.isfinite(value) and value <= MAX_DELAY):
        return None
    return value


def duration(text: str) -> float:
    """A duration in seconds: ``90``, ``90s``, ``15m``, ``2h``, ``3d`` (``2w``)."""
    value = _seconds(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (give {DURATIONS})")
    return value


def _parse_instant(text: str) -> datetime | None:
    value = text.strip()
    try:
        return datetime.fromisoformat(value[:-1] + "+00:00" if value[-1:] in "zZ" else value)
    except ValueError:
        return None


def instant(text: str) -> datetime:
    """An ISO 8601 time with its UTC offset (``2026-11-28T10:00:00Z``, ``...+02:00``)."""
    parsed = _parse_instant(text) if text.strip() else None
    if parsed is None:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r} (give {TIMES})")
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset; add Z or one such as +02:00")
    return parsed


def before(text: str) -> datetime | timedelta:
    """A point in the past: an age (``7d`` is seven days ago, counted back from the
    database's clock, not this host's), or an ISO 8601 time."""
    seconds = _seconds(text)
    if seconds is not None:
        return timedelta(seconds=seconds)
    parsed = _parse_instant(text) if text.strip() else None
    if parsed is None:
        raise argparse.ArgumentTypeError(
            f"not a duration or a time: {text!r} (give {DURATIONS}, meaning that long ago; "
            f"or {TIMES})"
        )
    return instant(text)
