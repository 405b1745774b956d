"""Deduplicated publishing: an event published with a key is written once per stream.

A key is unique within its stream while its event is there (a partial unique index on the
stream's ``dedup_key``; the column is NULL for events published without one, and for
every event of a client that does not know it, such as KanthorQ for Go). A second publish
with the same key writes nothing and returns the first event's id. The database enforces
it, so it holds across processes, inside a caller's transaction, and between publishers
that race: the second waits for the first's commit. Once retention deletes the event, its
key is free again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kanthorq.errors import InvalidPayload, KanthorQError
from kanthorq.sqlfiles import render

MAX_KEY = 256  # characters: the column is VARCHAR(256)

Row = tuple[str, str, bytes, str, int]  # id, subject, body, metadata, created_at


class KeyVanished(KanthorQError):
    """The event that held this key was deleted while the publish was looking it up."""


def check_key(key: object, what: str = "key") -> str:
    """``key``, if it can be a deduplication key; else :class:`InvalidPayload`."""
    if not isinstance(key, str):
        raise InvalidPayload(f"{what} must be a str, got {type(key).__name__}")
    if not 0 < len(key) <= MAX_KEY:
        raise InvalidPayload(f"{what} must be 1 to {MAX_KEY} characters, got {len(key)}")
    if "\x00" in key:
        raise InvalidPayload(f"{what} must not contain NUL characters")
    return key


def check_keys(keys: object, count: int) -> list[str | None]:
    """One key (or None) per item of a batch of ``count``."""
    if isinstance(keys, str) or not isinstance(keys, Sequence):
        raise InvalidPayload("keys must be a list with one key (or None) per item")
    if len(keys) != count:
        raise InvalidPayload(f"keys has {len(keys)} entries for {count} items; give one per item")
    return [None if k is None else check_key(k, f"keys[{n}]") for n, k in enumerate(keys)]


async def write_one(db: Any, stream_id: str, row: Row, key: str) -> tuple[str, bool]:
    """Write ``row`` under ``key``: its id and True, or the id of the event that holds the
    key already and False."""
    written = await db.fetchval(render("publish_keyed", stream_id=stream_id), *row, key)
    if written is not None:
        return str(written), True
    holders = await _holders(db, stream_id, [key])
    return holders[key], False


async def write_many(
    db: Any, stream_id: str, rows: Sequence[Row], keys: Sequence[str | None]
) -> list[tuple[str, bool]]:
    """Write ``rows`` (each under its key, when it has one) in one statement: for each, its
    id and whether it was written, or the id of the event that holds its key."""
    columns = [list(column) for column in zip(*rows, strict=True)]
    statement = render("publish_many_keyed", stream_id=stream_id)
    written = {r["id"] for r in await db.fetch(statement, *columns, list(keys))}
    skipped = [key for row, key in zip(rows, keys, strict=True) if row[0] not in written]
    holders = await _holders(db, stream_id, [k for k in skipped if k is not None])
    return [
        (row[0], True) if row[0] in written else (holders[str(key)], False)
        for row, key in zip(rows, keys, strict=True)
    ]


async def _holders(db: Any, stream_id: str, keys: list[str]) -> dict[str, str]:
    """The id of the event holding each of ``keys``."""
    if not keys:
        return {}
    rows = await db.fetch(render("dedup_lookup", stream_id=stream_id), sorted(set(keys)))
    found = {r["dedup_key"]: r["id"] for r in rows}
    gone = [k for k in keys if k not in found]
    if gone:
        # the holder was deleted (retention, a prune) between the conflict and this read, or
        # this transaction's snapshot cannot see it: publishing again writes it anew
        raise KeyVanished(
            f"the event holding key {gone[0]!r} was deleted while this publish looked it up "
            "(or this transaction cannot see it yet); publish again"
        )
    return found
