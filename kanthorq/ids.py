"""Ids and times as the storage contract writes them.

Ids are a namespace, ``_`` and a lowercase ULID (``event_01j...``). Times are milliseconds
since the epoch. Names of streams and consumers are short identifiers.
"""

from __future__ import annotations

import re
import time

from ulid import ULID

from kanthorq.errors import InvalidName

NAME_RE = re.compile(r"[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*")
MAX_NAME_LENGTH = 63
ID_RE = re.compile(r"(stream|consumer|event)_[0-9a-hjkmnp-tv-z]{26}")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_id(namespace: str) -> str:
    return f"{namespace}_{str(ULID()).lower()}"


def event_id_at(ms: int) -> str:
    """The smallest event id of a millisecond: a cursor that sorts before its events."""
    return "event_" + str(ULID.from_timestamp(ms / 1000)).lower()[:10] + "0" * 16


def validate_name(name: object, what: str) -> str:
    """Return ``name`` if it is a valid stream or consumer name, else raise InvalidName."""
    if not isinstance(name, str):
        raise InvalidName(f"{what} name must be a str, got {type(name).__name__}")
    if not name:
        raise InvalidName(f"{what} name must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(f"{what} name is longer than {MAX_NAME_LENGTH} characters: {name!r}")
    if not NAME_RE.fullmatch(name) or not name.isascii():
        raise InvalidName(
            f"{what} name {name!r} is not valid: use ASCII letters and digits, "
            "with single underscores between them (e.g. 'order_events')"
        )
    return name


def table_name(entity_id: str) -> str:
    """The table of a stream or consumer: ``kanthorq_<id>``, checked before it enters SQL."""
    if not ID_RE.fullmatch(entity_id):
        raise InvalidName(f"not a kanthorq stream or consumer id: {entity_id!r}")
    return f"kanthorq_{entity_id}"
