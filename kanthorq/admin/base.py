"""What every admin operation shares: looking up streams and consumers without creating them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg

from kanthorq.errors import UnknownConsumer, UnknownStream
from kanthorq.ids import validate_name
from kanthorq.sqlfiles import load, render

if TYPE_CHECKING:
    from kanthorq.app import App


@dataclass(frozen=True, slots=True)
class StreamInfo:
    id: str
    name: str
    created_at: int

    def sql(self, name: str) -> str:
        """The statement ``name`` with this stream's table filled in."""
        return render(name, stream_id=self.id)


@dataclass(frozen=True, slots=True)
class ConsumerInfo:
    id: str
    name: str
    stream_id: str
    stream_name: str
    includes: tuple[str, ...]
    excludes: tuple[str, ...]
    cursor: str
    cursor_txid: str  # the transaction half of the cursor (xid8, as text)
    # whether (cursor_txid, cursor) is the position; else another client (KanthorQ for Go)
    # converts by cursor alone (see sql/queries/convert.sql)
    coherent: bool
    skip_id: str  # passed over since a takeover: ids up to skip_id ...
    skip_txid: str  # ... of transactions below skip_txid
    attempt_max: int
    visibility_timeout_ms: int

    def sql(self, name: str) -> str:
        """The statement ``name`` with this consumer's task table and its stream's table."""
        return render(name, stream_id=self.stream_id, consumer_id=self.id)


def _consumer(row: asyncpg.Record) -> ConsumerInfo:
    return ConsumerInfo(
        id=row["id"],
        name=row["name"],
        stream_id=row["stream_id"],
        stream_name=row["stream_name"],
        includes=tuple(row["subject_includes"]),
        excludes=tuple(row["subject_excludes"]),
        cursor=row["cursor"],
        cursor_txid=str(row["cursor_txid"]),
        coherent=row["coherent"],
        skip_id=row["skip_id"],
        skip_txid=str(row["skip_txid"]),
        attempt_max=row["attempt_max"],
        visibility_timeout_ms=row["visibility_timeout"],
    )


class AdminBase:
    """The app whose database is administered, and registry lookups."""

    def __init__(self, app: App) -> None:
        self._app = app

    @property
    def pool(self) -> asyncpg.Pool:
        return self._app.pool

    async def streams(self) -> list[StreamInfo]:
        rows = await self.pool.fetch(load("admin_streams"))
        return [StreamInfo(r["id"], r["name"], r["created_at"]) for r in rows]

    async def stream(self, name: str) -> StreamInfo:
        """The stream ``name``; :class:`UnknownStream` when it does not exist."""
        validate_name(name, "stream")
        for info in await self.streams():
            if info.name == name:
                return info
        raise UnknownStream(f"no stream named {name!r}")

    async def consumers(self, stream: str | None = None) -> list[ConsumerInfo]:
        if stream is not None:
            validate_name(stream, "stream")
        rows = await self.pool.fetch(load("admin_consumers"))
        found = [_consumer(r) for r in rows]
        return [c for c in found if stream is None or c.stream_name == stream]

    async def consumer(self, name: str) -> ConsumerInfo:
        """The consumer ``name``; :class:`UnknownConsumer` when it does not exist."""
        validate_name(name, "consumer")
        row = await self.pool.fetchrow(load("admin_consumer"), name)
        if row is None:
            raise UnknownConsumer(f"no consumer named {name!r}")
        return _consumer(row)
