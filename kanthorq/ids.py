"""Ids and times as the storage contract writes them.

Ids are a namespace, ``_`` and a lowercase ULID (``event_01j...``). Times are milliseconds
since the epoch. Names of streams and consumers are short identifiers.
"""

from __future__ import annotations

import os
import re
import time

from kanthorq.errors import InvalidName

NAME_RE = re.compile(r"[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*")
MAX_NAME_LENGTH = 63
ID_RE = re.compile(r"(stream|consumer|event)_[0-9a-hjkmnp-tv-z]{26}")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford's base32, lowercase
# a random byte to one random character: its low 5 bits (256 is a multiple of 32, so every
# character is equally likely); 16 such characters are the 80 random bits of a ULID
_RANDOM_CHAR = bytes(ord(_ALPHABET[b & 31]) for b in range(256))
_last_ms = -1
_last_prefix = ""


def _time_part(ms: int) -> str:
    """The 10 characters of a ULID that hold its 48 bits of milliseconds."""
    global _last_ms, _last_prefix
    if ms != _last_ms:  # it changes once a millisecond: reuse it till then
        if not 0 <= ms < 1 << 48:
            raise ValueError(f"a ULID holds 48 bits of milliseconds, not {ms}")
        _last_prefix = "".join(_ALPHABET[(ms >> shift) & 31] for shift in range(45, -1, -5))
        _last_ms = ms
    return _last_prefix


def new_id(namespace: str) -> str:
    """``namespace``, ``_`` and a new lowercase ULID."""
    random_part = os.urandom(16).translate(_RANDOM_CHAR).decode("ascii")
    return f"{namespace}_{_time_part(time.time_ns() // 1_000_000)}{random_part}"


def new_ids(namespace: str, count: int) -> list[str]:
    """``count`` new ids, with one read of the system's randomness for all of them."""
    prefix = f"{namespace}_{_time_part(time.time_ns() // 1_000_000)}"
    chars = os.urandom(16 * count).translate(_RANDOM_CHAR).decode("ascii")
    return [prefix + chars[i : i + 16] for i in range(0, 16 * count, 16)]


def event_id_at(ms: int) -> str:
    """The smallest event id of a millisecond: a cursor that sorts before its events."""
    return "event_" + _time_part(ms) + "0" * 16


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
