"""Ids and times as the storage contract writes them.

Ids are a namespace, ``_`` and a lowercase ULID (``event_01j...``). Times are milliseconds
since the epoch. Names of streams and consumers are short identifiers.
"""

from __future__ import annotations

import os
import re
import threading
import time

from kanthorq.errors import InvalidName

NAME_RE = re.compile(r"[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*")
MAX_NAME_LENGTH = 63
ID_RE = re.compile(r"(stream|consumer|event)_[0-9a-hjkmnp-tv-z]{26}")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford's base32, lowercase
_VALUE = {c: i for i, c in enumerate(_ALPHABET)}
# a random byte to one random character: its low 5 bits (256 is a multiple of 32, so every
# character is equally likely); 16 such characters are the 80 random bits of a ULID
_RANDOM_CHAR = bytes(ord(_ALPHABET[b & 31]) for b in range(256))
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # every 10 bits as 2 characters
_lock = threading.Lock()
# the last id made: its milliseconds, its time part, its random part and that part's value
# (None until needed)
_last: tuple[int, str, str, int | None] = (-1, "", "", None)


def _base32(value: int, chars: int) -> str:
    """The low ``5 * chars`` bits of ``value`` (``chars`` even), most significant first."""
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in range(5 * chars - 10, -1, -10)])


def _time_part(ms: int) -> str:
    """The 10 characters of a ULID that hold its 48 bits of milliseconds."""
    if not 0 <= ms < 1 << 48:
        raise ValueError(f"a ULID holds 48 bits of milliseconds, not {ms}")
    return _base32(ms, 10)


def _count_up(first: int, count: int) -> list[str]:
    """The 16-character random parts of ``first``, ``first + 1``, ... (``count`` of them):
    the top 12 characters once per 2**20 values, the last 4 from two lookups each."""
    parts: list[str] = []
    value, end = first, first + count
    while value < end:
        high = value >> 20
        stop = min(end, (high + 1) << 20)
        head = _base32(high, 12)
        parts += [head + _PAIRS[(v >> 10) & 1023] + _PAIRS[v & 1023] for v in range(value, stop)]
        value = stop
    return parts


def _ulids(count: int, ms: int | None, lead: str = "") -> list[str]:
    """``count`` new ULIDs of millisecond ``ms`` (None: now by this host's clock), in
    increasing order, after every one this process made before.

    The random parts are 16 random characters each (one read of os.urandom for all), sorted.
    Within the millisecond of the last id made, they count up from its random part instead,
    as monotonic ULIDs do, so ids of one process sort in the order they were made. Each
    starts with ``lead``.
    """
    global _last
    if ms is None:
        ms = time.time_ns() // 1_000_000
    fresh = os.urandom(16 * count).translate(_RANDOM_CHAR).decode("ascii")
    parts = sorted([fresh[i : i + 16] for i in range(0, 16 * count, 16)])
    with _lock:
        last_ms, prefix, last_part, last_value = _last
        value: int | None = None
        if ms > last_ms:
            prefix = _time_part(ms)
        elif parts[0] <= last_part:  # the same millisecond (or the clock went back)
            if last_value is None:
                last_value = 0
                for char in last_part:
                    last_value = last_value * 32 + _VALUE[char]
            parts = _count_up(last_value + 1, count)
            value = last_value + count
        _last = (max(ms, last_ms), prefix, parts[-1], value)
    lead += prefix
    return [lead + part for part in parts]


def new_id(namespace: str, ms: int | None = None) -> str:
    """``namespace``, ``_`` and a new lowercase ULID of millisecond ``ms`` (None: now)."""
    return f"{namespace}_{_ulids(1, ms)[0]}"


def new_ids(namespace: str, count: int, ms: int | None = None) -> list[str]:
    """``count`` new ids of millisecond ``ms`` (None: now), in the order they sort."""
    if count <= 0:
        return []
    return _ulids(count, ms, namespace + "_")


# The millisecond of a stream's event ids. A consumer of KanthorQ for Go starts its cursor at
# an id of the stream's created_at millisecond (random bits after it) and reads the events
# whose ids sort after that cursor, so every event id must sort after every id of that
# millisecond: its time part is at least created_at + 1. Ids made in the same millisecond
# would sort before or after Go's cursor by chance, and an event before it is never seen.
# The time itself is the database's (kanthorq.clock), as created_at is.
def event_ms(now_ms: int, stream_created_at: int) -> int:
    """The time part of the next event ids of a stream created at ``stream_created_at``."""
    return max(now_ms, stream_created_at + 1)


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
