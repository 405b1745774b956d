"""All SQL access: registries, conversion, claims and task transitions.

Statements come from ``sql/queries``; table names come from ids and are quoted by
:mod:`kanthorq.sqlfiles`. Every transition of a running task is fenced on its state and on
the attempt its claim counted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from kanthorq import tables
from kanthorq.entities import Event, Task, TaskState
from kanthorq.errors import ConsumerConflict, StreamNotReady
from kanthorq.ids import event_id_at, new_id
from kanthorq.limits import NO_LIMITS, Limits
from kanthorq.sqlfiles import load, render, task_names

logger = logging.getLogger(__name__)

Executor = asyncpg.Connection | PoolConnectionProxy | asyncpg.Pool


@dataclass(frozen=True, slots=True)
class StreamRef:
    id: str
    name: str
    created_at: int  # ms; a new consumer's cursor starts here


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    name: str
    stream: str
    includes: tuple[str, ...]
    excludes: tuple[str, ...]
    attempt_max: int
    visibility_timeout_ms: int
    limits: Limits = NO_LIMITS


@dataclass(frozen=True, slots=True)
class Converted:
    scanned: int
    inserted: int
    locked: bool
    registered: bool
    waiting: bool
    takeover: bool = False  # another client moved the cursor: take over, then convert
    claimed: list[Claimed] = field(default_factory=list)


class Registry:
    """Streams and consumers: created when first used, cached per process.

    ``connect`` opens a connection outside the pool: a new stream is created on one, so that
    creating it never waits for the pool (which callers publishing in their own transactions
    may hold to the last connection), and it commits whatever the caller's transaction does.
    """

    def __init__(
        self, pool: asyncpg.Pool, connect: Callable[[], Awaitable[asyncpg.Connection]]
    ) -> None:
        self._pool = pool
        self._connect = connect
        self._streams: dict[str, StreamRef] = {}
        self._prepared: set[str] = set()  # streams whose table is complete (tables.py)

    async def stream(
        self, name: str, via: asyncpg.Connection | PoolConnectionProxy | None = None
    ) -> StreamRef:
        """The stream called ``name``, created with its table if it does not exist yet.

        ``via``: the caller's connection, to look the stream up without waiting for one of
        the pool's. Its created_at is what the ids of its events must follow
        (:func:`kanthorq.ids.event_ms`).
        """
        known = self._streams.get(name)
        if known is not None:
            return known
        row = await (self._pool if via is None else via).fetchrow(load("stream_get"), name)
        if row is None or not row["present"]:
            row = await self._create_stream(name)
        ref = StreamRef(id=row["id"], name=name, created_at=row["created_at"])
        self._streams[name] = ref
        return ref

    async def _create_stream(self, name: str) -> asyncpg.Record:
        conn = await self._connect()
        try:
            async with conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext($1))", f"kanthorq.stream.{name}"
                )
                row = await conn.fetchrow(load("stream_register"), new_id("stream"), name)
                assert row is not None
                spec = tables.stream_spec(row["id"])
                if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", spec.table):
                    await tables.create(conn, spec)
            return row
        finally:
            await conn.close()

    def forget(self, name: str) -> None:
        """Drop the cached stream ``name`` (its table was dropped): the next use looks it up,
        and creates it again."""
        self._streams.pop(name, None)
        self._prepared.discard(name)

    async def prepared_stream(
        self, name: str, via: asyncpg.Connection | PoolConnectionProxy | None = None
    ) -> StreamRef:
        """The stream, ready for conversion and keyed publishing: a table that another
        client created gets the columns and indexes it lacks, online
        (:mod:`kanthorq.tables`), on a connection of its own (never the pool's, which a
        caller publishing in its transaction may hold).

        Not from inside a caller's transaction (``via`` in one): building an index
        concurrently waits for every open transaction, the caller's too. Such a table is
        refused with :class:`StreamNotReady`; publishing outside a transaction once, or
        starting a consumer of the stream, completes it."""
        ref = await self.stream(name, via=via)
        if name not in self._prepared and via is not None and via.is_in_transaction():
            if not await tables.is_complete(via, tables.stream_spec(ref.id)):
                raise StreamNotReady(
                    f"stream {name!r} was created by another client (KanthorQ for Go, or an "
                    "earlier kanthorq) and lacks the index that deduplication keys need, "
                    "which cannot be built from inside your transaction; publish with a key "
                    "once outside a transaction, or start a consumer of the stream, and it "
                    "is added online"
                )
            self._prepared.add(name)
        if name not in self._prepared:
            conn = await self._connect()
            try:
                await tables.complete(conn, tables.stream_spec(ref.id))
            finally:
                await conn.close()
            self._prepared.add(name)
        return ref

    async def consumer(self, spec: ConsumerSpec) -> ConsumerQueries:
        """Register (or update) a consumer and create (or complete) its task table."""
        stream = await self.prepared_stream(spec.stream)
        async with self._pool.acquire() as conn:
            async with conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext($1))", f"kanthorq.consumer.{spec.name}"
                )
                row = await conn.fetchrow(
                    load("consumer_register"),
                    stream.id,
                    stream.name,
                    new_id("consumer"),
                    spec.name,
                    list(spec.includes),
                    list(spec.excludes),
                    event_id_at(stream.created_at),
                    spec.attempt_max,
                    spec.visibility_timeout_ms,
                    *spec.limits.claim_args(),
                )
                if row is None:
                    other = await conn.fetchrow(load("consumer_get"), spec.name)
                    raise ConsumerConflict(
                        f"consumer {spec.name!r} already exists on stream "
                        f"{other['stream_name'] if other else '?'!r}, not on {spec.stream!r}; "
                        "pick another consumer name"
                    )
                # a rate-limited consumer's claims count the recent ones: attempted_at's index
                table = tables.task_spec(row["id"], rate=spec.limits.rate is not None)
                # DDL locks the table even when everything exists, so it would wait for (and
                # queue every claim and ack behind) any open transaction that wrote it
                if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table.table):
                    await tables.create(conn, table)
            await tables.complete(conn, table)  # a table another client created
        return ConsumerQueries(spec.name, stream.id, row["id"], spec.limits)


_UNDECODABLE = object()
_SHOWN = 200  # characters of an undecodable value that a warning shows


def _loads(raw: str) -> Any:
    """JSON text decoded by msgspec, else by Python's ``json`` (which takes numbers msgspec
    refuses, such as ones beyond the float range), else :data:`_UNDECODABLE`."""
    try:
        return msgspec.json.decode(raw)
    except Exception:
        pass
    try:
        return json.loads(raw)
    except Exception:
        return _UNDECODABLE


def _metadata(raw: str | None, what: str, event_id: str) -> dict[str, Any]:
    """A metadata object; ``{}`` (and a warning) when it cannot be decoded into one, so one
    odd row written by another client cannot abort a claim."""
    if raw is None:
        return {}
    value = _loads(raw)
    if isinstance(value, dict):
        return value
    logger.warning(
        "%s of %s is not a JSON object that can be decoded, using {}: %.*s",
        what,
        event_id,
        _SHOWN,
        raw,
        extra={"event_id": event_id},
    )
    return {}


def _errors(raw: Sequence[str] | None, event_id: str) -> list[dict[str, Any]]:
    """The attempts' error records; one that cannot be decoded is kept as ``{"raw": text}``."""
    errors: list[dict[str, Any]] = []
    for item in raw or ():
        value = _loads(item) if item is not None else _UNDECODABLE
        if isinstance(value, dict):
            errors.append(value)
            continue
        logger.warning(
            "an attempted_error record of task %s is not a JSON object that can be decoded, "
            "keeping its text: %.*s",
            event_id,
            _SHOWN,
            item,
            extra={"event_id": event_id},
        )
        errors.append({"raw": item})
    return errors


class Claimed(msgspec.Struct, frozen=True):
    """A claimed task with its event; ``event`` is None when the event no longer exists."""

    task: Task
    event: Event | None


def _claimed(row: asyncpg.Record) -> Claimed:
    task = Task(
        event_id=row["event_id"],
        subject=row["subject"],
        state=TaskState(row["state"]),
        schedule_at=row["schedule_at"],
        finalized_at=row["finalized_at"],
        attempt_count=row["attempt_count"],
        attempted_at=row["attempted_at"],
        attempted_error=_errors(row["attempted_error"], row["event_id"]),
        metadata=_metadata(row["metadata"], "task metadata", row["event_id"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
    if not row["found"]:
        return Claimed(task, None)
    event = Event(
        id=row["event_id"],
        subject=row["subject"],
        body=row["body"] or b"",
        metadata=_metadata(row["event_metadata"], "event metadata", row["event_id"]),
        created_at=row["event_created_at"],
    )
    return Claimed(task, event)


class ConsumerQueries:
    """The statements of one consumer, rendered once for its stream and task tables."""

    def __init__(
        self, name: str, stream_id: str, consumer_id: str, limits: Limits = NO_LIMITS
    ) -> None:
        self.name = name
        self.stream_id = stream_id
        self.consumer_id = consumer_id
        self.limits = limits
        self._table = task_names(consumer_id)["tasks"]
        ids = {"stream_id": stream_id, "consumer_id": consumer_id}
        self._convert = render("convert", **ids)
        self._claim = render("claim", **ids)
        self._complete = render("complete", consumer_id=consumer_id)
        self._fail = render("fail", consumer_id=consumer_id)
        self._cancel = render("cancel", consumer_id=consumer_id)
        self._extend = render("extend", consumer_id=consumer_id)
        self._hand_back = render("hand_back", consumer_id=consumer_id)
        self._rescue = render("rescue", consumer_id=consumer_id)
        self._takeover = render("takeover", stream_id=stream_id)
        self._next_due = render("next_due", consumer_id=consumer_id)
        self._with_events = render("tasks_with_events", **ids)

    async def convert(
        self, db: Executor, limit: int, claim: int = 0, visibility_timeout_ms: int = 0
    ) -> Converted:
        """Convert up to ``limit`` events, and claim up to ``claim`` of the new tasks that
        can run now (they are inserted running, as a claim would leave them, with their
        deadline ``visibility_timeout_ms`` from now)."""
        rows = await db.fetch(self._convert, self.name, limit, claim, visibility_timeout_ms)
        first = rows[0]
        claimed = [_claimed(row) for row in rows if row["event_id"] is not None]
        return Converted(
            first["scanned"],
            first["inserted"],
            first["locked"],
            first["registered"],
            first["waiting"],
            first["takeover"],
            claimed,
        )

    async def takeover(self, db: Executor) -> asyncpg.Record | None:
        """Take over the consumer from another client that moved its cursor (see
        takeover.sql); the new position, or None when there was nothing to take over."""
        return await db.fetchrow(self._takeover, self.name)

    async def claim(
        self, db: Executor, limit: int, visibility_timeout_ms: int = 0
    ) -> list[Claimed]:
        """Claim up to ``limit`` runnable tasks (fewer when the consumer's limits across
        workers allow fewer), each with its deadline ``visibility_timeout_ms`` from now."""
        rows = await db.fetch(
            self._claim,
            limit,
            visibility_timeout_ms,
            *self.limits.claim_args(),
            self.name,
            self._table,
        )
        return [_claimed(row) for row in rows]

    async def complete(
        self, db: Executor, ids: Sequence[str], attempts: Sequence[int]
    ) -> set[tuple[str, int]]:
        """Complete the given attempts; returns the ``(event_id, attempt)`` pairs that changed
        (empty, so falsy, when none did: a stale attempt changes nothing)."""
        rows = await db.fetch(self._complete, ids, attempts)
        return {(row["event_id"], row["attempt_count"]) for row in rows}

    async def fail(
        self,
        db: Executor,
        event_id: str,
        attempt: int,
        *,
        discard: bool,
        delay_ms: int,
        error: bytes,
    ) -> bool:
        state = TaskState.DISCARDED if discard else TaskState.RETRYABLE
        row = await db.fetchrow(self._fail, event_id, attempt, int(state), delay_ms, error.decode())
        return row is not None

    async def cancel(self, db: Executor, event_id: str, attempt: int) -> bool:
        return await db.fetchrow(self._cancel, event_id, attempt) is not None

    async def extend(self, db: Executor, event_id: str, attempt: int, ms: int) -> int | None:
        """Push the attempt's deadline to at least ``ms`` from now; the new deadline (ms
        since the epoch, by the database's clock), or None when the attempt is stale."""
        value = await db.fetchval(self._extend, event_id, attempt, ms)
        return None if value is None else int(value)

    async def hand_back(
        self, db: Executor, ids: Sequence[str], attempts: Sequence[int], error: bytes
    ) -> set[str]:
        rows = await db.fetch(self._hand_back, ids, attempts, error.decode())
        return {row["event_id"] for row in rows}

    async def rescue(self, db: Executor, attempt_max: int) -> tuple[int, list[str]]:
        """Rescue the running tasks past their deadline: how many were made retryable, and
        the event ids of those discarded because their attempts were used up."""
        rows = await db.fetch(self._rescue, attempt_max, self.name)
        discarded = [row["event_id"] for row in rows if row["state"] == TaskState.DISCARDED]
        return len(rows) - len(discarded), discarded

    async def with_events(self, db: Executor, event_ids: Sequence[str]) -> list[Claimed]:
        """Tasks with their events, as a claim returns them (for a task not claimed here)."""
        return [_claimed(row) for row in await db.fetch(self._with_events, list(event_ids))]

    async def next_due(self, db: Executor) -> int | None:
        value = await db.fetchval(self._next_due)
        return None if value is None else int(value)
