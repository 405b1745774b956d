"""Times on the command line: an ISO 8601 instant with its offset, or an age such as 7d."""

from __future__ import annotations

import argparse
import re
from datetime import datetime, timedelta

_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def instant(text: str) -> datetime:
    """An ISO 8601 time with its UTC offset (``2026-11-28T10:00:00Z``, ``...+02:00``)."""
    value = text.strip()
    try:
        parsed = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {text!r} (e.g. 2026-11-28T10:00:00Z)"
        ) from None
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset; add Z or one such as +02:00")
    return parsed


def age(text: str) -> float:
    """A duration in seconds: ``90s``, ``15m``, ``12h``, ``7d``, ``2w``."""
    match = _AGE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (a number and a unit: s, m, h, d or w; e.g. 7d)"
        )
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


def before(text: str) -> datetime | timedelta:
    """A point in the past: an ISO 8601 time, or an age (``7d`` is seven days ago; counted
    back from the database's clock, not this host's)."""
    if _AGE.fullmatch(text.strip()):
        return timedelta(seconds=age(text))
    return instant(text)
