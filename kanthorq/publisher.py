"""Publishing: check and encode first, then one INSERT or one COPY, then a notification.

A publish the publisher owns notifies after its commit, coalesced to at most one
notification per stream per ``window`` seconds per process, so notifications never hold
the commit lock of the publishing transaction. A publish in the caller's transaction
(``conn=``) notifies inside it: PostgreSQL delivers that only if the transaction commits.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any, TypeAlias

import asyncpg

from kanthorq import dedup, grouping
from kanthorq.clock import DbClock
from kanthorq.database import (
    DB_ERRORS,
    DEFAULT_STATEMENT_CACHE_SIZE,
    Conn,
    Target,
    connect,
    notify_sql,
    own_statement,
)
from kanthorq.entities import Event
from kanthorq.errors import ConnectionFailed, InvalidPayload
from kanthorq.grouping import GroupWriter
from kanthorq.ids import event_ms, new_ids, table_name, validate_name
from kanthorq.payloads import encode_body, encode_metadata
from kanthorq.publish_errors import Step, noting_connect_failures, publish_error
from kanthorq.schedule import with_schedule
from kanthorq.sqlfiles import render
from kanthorq.store import Registry, StreamRef
from kanthorq.subjects import validate_subject

logger = logging.getLogger(__name__)

Item: TypeAlias = tuple[str, Any] | tuple[str, Any, dict[str, Any] | None] | Event
Row: TypeAlias = tuple[str, str, bytes, str, int]
Content: TypeAlias = tuple[str, bytes, str]  # subject, body, metadata: checked and encoded
_COLUMNS = ("id", "subject", "body", "metadata", "created_at")
_NOTIFY = "SELECT pg_notify($1, '')"
_NOTIFY_ERRORS: tuple[type[BaseException], ...] = (ConnectionFailed, *DB_ERRORS)
_WRITE_ERRORS = _NOTIFY_ERRORS


def channel(stream_id: str) -> str:
    """The LISTEN/NOTIFY channel of a stream, named from its id like its table."""
    return table_name(stream_id)


class Notifier:
    """Coalesced after-commit notifications, sent from the background on a connection of
    their own: a notification never waits for (or holds) one of the pool's connections,
    which the next publish wants.

    Each is one simple-query string (:func:`notify_sql`), so it works through a transaction
    pooler. After a failure it backs off (``RETRY_FIRST`` seconds, doubling up to
    ``RETRY_MAX``) and drops the notifications asked for meanwhile: the workers' poll finds
    those events. It warns once when notifying starts failing (and at most once per
    ``WARN_EVERY`` seconds while it keeps failing), never once per publish."""

    RETRY_FIRST = 0.5
    RETRY_MAX = 30.0
    WARN_EVERY = 300.0

    def __init__(
        self,
        target: Target,
        window: float = 0.005,
        *,
        statement_cache_size: int = DEFAULT_STATEMENT_CACHE_SIZE,
    ) -> None:
        self._target = target
        self._window = window
        self._cache_size = statement_cache_size
        self._last: dict[str, float] = {}
        self._pending: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._failures = 0  # consecutive failed attempts
        self._dropped = 0  # notifications skipped while backing off
        self._retry_at = 0.0  # no attempt before this (time.monotonic())
        self._warned_at = -math.inf

    def warm(self) -> None:
        """Open the notification connection in the background now, not at the first publish."""
        self._spawn(self._open())

    async def _open(self) -> None:
        try:
            async with self._lock:
                await self._connection()
        except _NOTIFY_ERRORS as exc:
            logger.debug("notification connection not opened yet: %s: %s", type(exc).__name__, exc)

    async def _connection(self) -> asyncpg.Connection:
        """The notification connection (the caller holds the lock), opened when needed."""
        if self._conn is None or self._conn.is_closed():
            self._conn = await connect(
                self._target, timeout=5.0, statement_cache_size=self._cache_size
            )
        return self._conn

    async def _send_now(self, stream_id: str) -> None:
        async with self._lock:
            conn = await self._connection()
            await conn.execute(notify_sql(channel(stream_id)))

    def inline(self, stream_id: str) -> bool:
        """Whether a publish should notify in its own statement, delivered by its commit:
        the quickest wake-up, when none was sent or is due for the stream within the
        window. Otherwise it asks :meth:`notify`, which coalesces."""
        now = time.monotonic()
        if stream_id in self._pending or now - self._last.get(stream_id, -math.inf) < self._window:
            return False
        self._last[stream_id] = now
        return True

    def notify(self, stream_id: str) -> None:
        if stream_id in self._pending:
            return
        self._pending.add(stream_id)
        delay = self._last.get(stream_id, 0.0) + self._window - time.monotonic()
        self._spawn(self._send(stream_id, max(delay, 0.0)))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background; :meth:`flush` waits for it."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, stream_id: str, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        self._pending.discard(stream_id)
        self._last[stream_id] = time.monotonic()
        if self._last[stream_id] < self._retry_at:
            self._dropped += 1  # backing off: the workers' poll finds the events
            return
        try:
            await self._send_now(stream_id)
        except _NOTIFY_ERRORS as exc:
            self._close_connection()
            self._failed(stream_id, exc)
            return
        if self._failures:
            logger.info(
                "notifications work again, after %d failed attempts (%d wake-ups skipped)",
                self._failures,
                self._dropped,
            )
            self._failures = self._dropped = 0

    def _failed(self, stream_id: str, exc: BaseException) -> None:
        """Back off, and warn unless it warned lately: a lost wake-up only costs latency."""
        self._failures += 1
        now = time.monotonic()
        backoff = min(self.RETRY_FIRST * 2 ** (self._failures - 1), self.RETRY_MAX)
        self._retry_at = now + backoff
        level = logging.DEBUG
        if now - self._warned_at >= self.WARN_EVERY:
            self._warned_at, level = now, logging.WARNING
        logger.log(
            level,
            "could not notify stream %s: %s: %s; workers find new events by polling until "
            "notifying works again (next try in %.1fs, %d failed attempts so far)",
            stream_id,
            type(exc).__name__,
            exc,
            backoff,
            self._failures,
            extra={"stream_id": stream_id, "failures": self._failures},
        )

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    async def flush(self) -> None:
        """Wait until every notification asked for so far is sent (or has failed)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        await self.flush()
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await asyncio.wait_for(conn.close(), 5.0)
            except DB_ERRORS:
                conn.terminate()


def _content(
    subject: object, body: object, metadata: object, max_body: int, schedule: int | None
) -> Content:
    return (
        validate_subject(subject),
        encode_body(body, max_body),
        encode_metadata(with_schedule(metadata, schedule)),
    )


def _item_content(item: object, max_body: int, schedule: int | None) -> Content:
    if isinstance(item, Event):
        if item.id:
            raise InvalidPayload("publish_many takes Events without an id; the publisher makes it")
        return _content(item.subject, item.body, item.metadata, max_body, schedule)
    if isinstance(item, tuple) and len(item) in (2, 3):
        meta = item[2] if len(item) == 3 else None
        return _content(item[0], item[1], meta, max_body, schedule)
    raise InvalidPayload(
        "publish_many items must be (subject, body), (subject, body, metadata) or "
        f"kanthorq.Event, got {type(item).__name__}"
    )


def _contents(items: Sequence[object], max_body: int, schedule: int | None) -> list[Content]:
    """The checked and encoded items of a batch. The common item, ``(subject, body)``, takes
    a short path: its metadata is the batch's, encoded once."""
    plain = encode_metadata(with_schedule(None, schedule))
    contents: list[Content] = []
    append = contents.append
    valid: object = None  # the last subject checked (a batch often has one subject)
    for item in items:
        if type(item) is tuple and len(item) == 2:
            subject, body = item
            if subject is not valid:
                valid = validate_subject(subject)
            append((subject, encode_body(body, max_body), plain))
        else:
            append(_item_content(item, max_body, schedule))
    return contents


class Publisher:
    def __init__(
        self,
        pool: asyncpg.Pool,
        registry: Registry,
        notifier: Notifier,
        clock: DbClock,
        *,
        max_body_size: int,
    ) -> None:
        self._pool = pool
        self._registry = registry
        self._notifier = notifier
        self._clock = clock
        self._resync: asyncio.Task[None] | None = None
        self._max_body = max_body_size
        self._groups: dict[str, GroupWriter] = {}  # stream id: its group commit

    def _group(self, stream_id: str) -> GroupWriter:
        group = self._groups.get(stream_id)
        if group is None:
            one, one_notify, batch = (
                render("publish_one", stream_id=stream_id),
                render("publish_one_notify", stream_id=stream_id),
                render("publish_batch", stream_id=stream_id),
            )
            wake = channel(stream_id)

            async def write(rows: Sequence[Row]) -> bool:
                if len(rows) > 1:
                    await self._pool.execute(batch, *grouping.columns(rows))
                    return False
                if self._notifier.inline(stream_id):  # the first publish in a while
                    await self._pool.execute(one_notify, *rows[0], wake)
                    return True
                await self._pool.execute(one, *rows[0])
                return False

            group = self._groups[stream_id] = GroupWriter(write, _WRITE_ERRORS)
        return group

    async def _read_clock(self) -> None:
        """Read the database's time again (in the background; the clock is followed
        meanwhile)."""
        try:
            with own_statement():
                await self._clock.sync(self._pool)
        except DB_ERRORS as exc:
            logger.debug("could not read the database's clock: %s: %s", type(exc).__name__, exc)
        finally:
            self._resync = None

    def _rows(self, ref: StreamRef, contents: Sequence[Content]) -> list[Row]:
        """The rows of ``contents``, with new ids and one time: the database's clock, and
        after the stream's creation (:func:`kanthorq.ids.event_ms`)."""
        if self._clock.stale() and self._resync is None:
            self._resync = asyncio.get_running_loop().create_task(self._read_clock())
        ms = event_ms(self._clock.now_ms(), ref.created_at)
        ids = new_ids("event", len(contents), ms)
        return [(i, s, b, m, ms) for i, (s, b, m) in zip(ids, contents, strict=True)]

    async def publish(
        self,
        stream: str,
        subject: str,
        body: object,
        metadata: dict[str, Any] | None,
        conn: Conn | None,
        schedule: int | None = None,
        key: str | None = None,
    ) -> tuple[str, bool]:
        """The event's id, and whether it was written (False: ``key`` is taken, and the id
        is that of the event holding it)."""
        validate_name(stream, "stream")
        if key is not None:
            dedup.check_key(key)
        content = _content(subject, body, metadata, self._max_body, schedule)
        db = self._pool if conn is None else conn
        made: list[tuple[str, bool]] = []

        async def insert(ref: StreamRef) -> bool:
            [row] = self._rows(ref, [content])
            if key is not None:
                made[:] = [await dedup.write_one(db, ref.id, row, key)]
                return False
            notified = False
            if conn is None:  # with concurrent publishes of the stream, one commit for all
                notified = await self._group(ref.id).write(row)
            else:
                await conn.execute(render("publish_one", stream_id=ref.id), *row)
            made[:] = [(row[0], True)]
            return notified

        await self._write(stream, conn, insert, keyed=key is not None)
        return made[0]

    async def publish_many(
        self,
        stream: str,
        items: Iterable[Item],
        conn: Conn | None,
        schedule: int | None = None,
        keys: Sequence[str | None] | None = None,
    ) -> tuple[list[str], list[bool] | None]:
        """The events' ids, and for a batch with keys whether each was written (see
        :meth:`publish`; None: every one was). One COPY when no item has a key."""
        validate_name(stream, "stream")
        batch = items if isinstance(items, list | tuple) else list(items)
        checked = None if keys is None else dedup.check_keys(keys, len(batch))
        contents = _contents(batch, self._max_body, schedule)
        if not contents:
            return [], None
        keyed = checked is not None and any(k is not None for k in checked)
        made: list[str] = []
        created: list[bool] = []

        async def write(ref: StreamRef) -> None:
            rows = self._rows(ref, contents)
            if keyed:
                assert checked is not None
                pairs = await dedup.write_many(conn or self._pool, ref.id, rows, checked)
                made[:] = [event_id for event_id, _ in pairs]
                created[:] = [new for _, new in pairs]
                return
            made[:] = [row[0] for row in rows]
            if conn is not None:
                await self._copy(conn, ref, rows)
                return
            async with self._pool.acquire() as own:
                await self._copy(own, ref, rows)

        await self._write(stream, conn, write, keyed=keyed)
        return made, created if keyed else None

    async def _write(
        self,
        stream: str,
        conn: Conn | None,
        write: Callable[[StreamRef], Awaitable[bool | None]],
        *,
        keyed: bool = False,
    ) -> None:
        """``write`` the stream's rows, then notify its workers (after the commit when the
        publisher owns the transaction, else inside the caller's), unless ``write`` says its
        own statement did. A database failure is a
        :class:`PublishError` that tells whether the event may have been written: a failure
        to open a pooled connection (the pool notes those), to find the stream, or a
        statement the server refused wrote nothing; a connection lost mid-write may have."""
        joined = conn is not None and conn.is_in_transaction()
        step: Step = "stream"
        with own_statement(), noting_connect_failures() as connect_failures:
            try:
                # keys need the stream's dedup_key column and index (another client's table
                # may lack them until they are added)
                if keyed:
                    ref = await self._registry.prepared_stream(stream, via=conn)
                else:
                    ref = await self._registry.stream(stream, via=conn)
                step = "write"
                try:
                    notified = await write(ref)
                except asyncpg.UndefinedTableError:
                    # the stream was dropped (kanthorq drop stream) since this process cached
                    # it; a caller's transaction has failed, and the caller must retry it
                    self._registry.forget(stream)
                    if conn is not None:
                        raise
                    step = "stream"
                    ref = await self._registry.stream(stream)  # created again
                    step = "write"
                    notified = await write(ref)
                step = "notify"
                if conn is not None:
                    await conn.execute(_NOTIFY, channel(ref.id))
                elif not notified:  # (else the write's own statement notified)
                    self._notifier.notify(ref.id)
            except _WRITE_ERRORS as exc:
                connecting = any(exc is failure for failure in connect_failures)
                raise publish_error(exc, step=step, connecting=connecting, joined=joined) from exc

    @staticmethod
    async def _copy(conn: Conn, ref: StreamRef, rows: Sequence[Row]) -> None:
        await conn.copy_records_to_table(table_name(ref.id), records=rows, columns=_COLUMNS)
