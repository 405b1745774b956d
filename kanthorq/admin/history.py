"""Replay and dropping: moving a consumer's cursor back, removing consumers and streams."""

from __future__ import annotations

from datetime import datetime, timedelta

from kanthorq.admin.base import AdminBase, ConsumerInfo
from kanthorq.admin.results import Changed
from kanthorq.checks import moment
from kanthorq.database import Conn
from kanthorq.errors import ConfigError
from kanthorq.ids import event_id_at
from kanthorq.publisher import channel
from kanthorq.sqlfiles import load, stream_names, task_names


def _confirmed(confirm: bool, what: str) -> None:
    if confirm is not True:
        raise ConfigError(
            f"dropping {what} deletes its table and every row in it: pass confirm=True"
        )


class History(AdminBase):
    """``replay``, ``drop_consumer`` and ``drop_stream``."""

    async def replay(
        self,
        consumer: str,
        *,
        since: datetime | timedelta | None = None,
        event_id: str | None = None,
    ) -> Changed:
        """Move the consumer's cursor back so it converts the stream again from ``since`` (an
        aware datetime, or an age by the database's clock) or from the transaction that wrote
        ``event_id``. Events that already have a task get no second one. A cursor that is
        already at or before that point is left alone: a replay never skips events."""
        if (since is None) == (event_id is None):
            raise ConfigError("give since= or event_id=, one of them")
        when = None if since is None else moment(since, "since")
        if event_id is not None and (not isinstance(event_id, str) or not 0 < len(event_id) <= 64):
            raise ConfigError(f"not an event id: {event_id!r}")
        info = await self.consumer(consumer)
        since_ms = None if when is None else max(await when.resolve(self.pool), 0)
        async with self.pool.acquire() as conn, conn.transaction():
            if info.coherent:
                result = await self._replay_position(conn, info, since_ms, event_id)
            else:
                result = await self._replay_cursor(conn, info, since_ms, event_id)
            if result.updated:
                await conn.execute("SELECT pg_notify($1, '')", channel(info.stream_id))
        return result

    @staticmethod
    async def _replay_position(
        conn: Conn, info: ConsumerInfo, since_ms: int | None, event_id: str | None
    ) -> Changed:
        """Replay in (txid, id) order: from the first transaction holding an event at or
        after that time, or from the transaction that wrote the event."""
        stream = stream_names(info.stream_id)["stream"]
        result = Changed()
        if since_ms is not None:
            start = event_id_at(since_ms)
            txid = await conn.fetchval(f"SELECT min(txid) FROM {stream} WHERE id >= $1", start)
            reason = "no event at or after that time"
        else:
            start = ""
            txid = await conn.fetchval(f"SELECT txid FROM {stream} WHERE id = $1", event_id)
            reason = "event not found"
        if txid is None:
            result.skip(reason)
            return result
        moved = await conn.fetchrow(load("admin_replay"), info.name, str(txid), start)
        if moved is None:
            result.skip("cursor already at or before that point")
            return result
        result.updated = 1
        result.details = {
            "cursor_before": [moved["old_txid"], moved["old_cursor"]],
            "cursor_after": [str(txid), start],
        }
        return result

    @staticmethod
    async def _replay_cursor(
        conn: Conn, info: ConsumerInfo, since_ms: int | None, event_id: str | None
    ) -> Changed:
        """Replay for a consumer another client converts by its cursor alone (KanthorQ for
        Go reads the events whose ids sort after it): the cursor moves to just before the
        first event replayed, and stays that client's."""
        stream = stream_names(info.stream_id)["stream"]
        result = Changed()
        if since_ms is not None:
            cursor = event_id_at(since_ms)
            found = f"SELECT EXISTS (SELECT 1 FROM {stream} WHERE id >= $1)"
            if not await conn.fetchval(found, cursor):
                result.skip("no event at or after that time")
                return result
        else:
            if not await conn.fetchval(
                f"SELECT EXISTS (SELECT 1 FROM {stream} WHERE id = $1)", event_id
            ):
                result.skip("event not found")
                return result
            before = await conn.fetchval(f"SELECT max(id) FROM {stream} WHERE id < $1", event_id)
            cursor = before or ""
        moved = await conn.fetchrow(load("admin_replay_cursor"), info.name, cursor)
        if moved is None:
            result.skip("cursor already at or before that point")
            return result
        result.updated = 1
        result.details = {"cursor_before": moved["old_cursor"], "cursor_after": cursor}
        return result

    async def drop_consumer(self, consumer: str, *, confirm: bool = False) -> Changed:
        """Delete the consumer: its registry row and its task table, with every task."""
        _confirmed(confirm, f"consumer {consumer!r}")
        info = await self.consumer(consumer)
        async with self.pool.acquire() as conn, conn.transaction():
            await self._drop_consumer(conn, info)
        return Changed(updated=1, details={"consumers": [info.name]}, verb="deleted")

    async def drop_stream(self, stream: str, *, confirm: bool = False) -> Changed:
        """Delete the stream: its registry row and event table, and its consumers with their
        task tables (a consumer cannot outlive its stream)."""
        _confirmed(confirm, f"stream {stream!r} (and its consumers)")
        info = await self.stream(stream)
        consumers = await self.consumers(stream)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))", f"kanthorq.stream.{info.name}"
            )
            for each in consumers:
                await self._drop_consumer(conn, each)
            await conn.execute(f"DROP TABLE IF EXISTS {stream_names(info.id)['stream']}")
            await conn.execute("DELETE FROM kanthorq_stream_registry WHERE id = $1", info.id)
        return Changed(
            updated=1,
            details={"streams": [info.name], "consumers": [c.name for c in consumers]},
            verb="deleted",
        )

    @staticmethod
    async def _drop_consumer(conn: Conn, info: ConsumerInfo) -> None:
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))", f"kanthorq.consumer.{info.name}"
        )
        await conn.execute(f"DROP TABLE IF EXISTS {task_names(info.id)['tasks']}")
        await conn.execute("DELETE FROM kanthorq_consumer_registry WHERE id = $1", info.id)
