"""Read-only inspection: streams, consumers, lag, tasks."""

from __future__ import annotations

from typing import Any

import asyncpg

from kanthorq.admin.base import AdminBase, ConsumerInfo
from kanthorq.admin.filters import TaskFilter, state_name
from kanthorq.admin.overview import OverviewReader
from kanthorq.admin.views import (
    EventView,
    Overview,
    ScheduleOverview,
    TaskDetail,
    TaskView,
    decode_json,
)
from kanthorq.entities import ATTEMPT_BASE_KEY
from kanthorq.errors import ConfigError, UnknownStream
from kanthorq.ids import validate_name
from kanthorq.sqlfiles import load, render, task_names

EXACT_LIMIT = 10_000
MAX_LIST = 10_000
# the orders of list_tasks: newest event first, oldest first, or next run first
ORDERS = {
    "newest": "t.event_id DESC",
    "oldest": "t.event_id",
    "due": "t.schedule_at, t.event_id",
}


def _whole(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{what} must be a whole number from {low} to {high}, got {value!r}")
    return value


def _decoded(text: str | None) -> Any:
    """A JSON value stored as text; text that is not JSON is kept as it is."""
    if text is None:
        return None
    ok, value = decode_json(text)
    return value if ok else text


def _error_record(value: dict[str, Any]) -> dict[str, Any]:
    """An error record in this package's shape ``{at, attempt, error, traceback}``. KanthorQ
    for Go writes ``{at, error, stack}``: its stack is the traceback, it records no attempt
    number (None), and ``client`` says where the record came from."""
    if "stack" not in value or "traceback" in value:
        return value
    record = {k: v for k, v in value.items() if k != "stack"}
    record["traceback"] = value["stack"]
    record.setdefault("attempt", None)
    record["client"] = "go"
    return record


def _error_records(raw: list[str] | None) -> list[dict[str, Any]]:
    records = []
    for text in raw or ():
        value = _decoded(text)
        records.append(_error_record(value) if isinstance(value, dict) else {"raw": text})
    return records


def _used(attempts: int, base: Any) -> int:
    """The attempts that count against the budget: those after the base a resume recorded
    (as :attr:`kanthorq.entities.Task.attempts_used` counts them)."""
    counted = base if isinstance(base, int) and not isinstance(base, bool) else 0
    return max(attempts - counted, 0)


def _task_view(row: asyncpg.Record) -> TaskView:
    last = _decoded(row["last_error"])
    if last is not None and not isinstance(last, dict):
        last = {"error": str(last)}
    message = None if last is None else last.get("error", last.get("raw"))
    at = None if last is None else last.get("at")
    return TaskView(
        event_id=row["event_id"],
        subject=row["subject"],
        state=state_name(row["state"]),
        state_code=row["state"],
        attempts=row["attempt_count"],
        attempts_used=_used(row["attempt_count"], _decoded(row["attempt_base"])),
        schedule_at=row["schedule_at"],
        attempted_at=row["attempted_at"],
        finalized_at=row["finalized_at"],
        errors=row["errors"] or 0,
        last_error=None if message is None else str(message),
        last_error_at=at if isinstance(at, int) and not isinstance(at, bool) else None,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _task_detail(info: ConsumerInfo, row: asyncpg.Record) -> TaskDetail:
    event = None
    if row["found"]:
        event = EventView(
            id=row["event_id"],
            subject=row["event_subject"],
            created_at=row["event_created_at"],
            metadata=_decoded(row["event_metadata"]),
            body=row["body"] or b"",
        )
    metadata = _decoded(row["metadata"])
    base = metadata.get(ATTEMPT_BASE_KEY) if isinstance(metadata, dict) else None
    return TaskDetail(
        consumer=info.name,
        stream=info.stream_name,
        event_id=row["event_id"],
        subject=row["subject"],
        state=state_name(row["state"]),
        state_code=row["state"],
        attempts=row["attempt_count"],
        attempts_used=_used(row["attempt_count"], base),
        attempt_max=info.attempt_max,
        schedule_at=row["schedule_at"],
        attempted_at=row["attempted_at"],
        finalized_at=row["finalized_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        metadata=metadata,
        errors=_error_records(row["attempted_error"]),
        event=event,
    )


class Inspection(AdminBase):
    """``show``, ``list_tasks``, ``count_tasks``, ``get_task`` and ``get_event``."""

    async def show(self, stream: str | None = None, *, exact_limit: int = EXACT_LIMIT) -> Overview:
        """Every stream and consumer (of ``stream`` only, when given), read in one snapshot.

        Counts (events, lag, tasks per state) are exact below ``exact_limit``; larger ones are
        estimates from PostgreSQL's statistics, named in each result's ``estimated``.
        :class:`UnknownStream` when ``stream`` does not exist.
        """
        if stream is not None:
            validate_name(stream, "stream")
        limit = _whole(exact_limit, "exact_limit", 1, 1_000_000_000)
        async with (
            self.pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            # a table locked by DDL (a drop, a migration) fails the overview, not hangs it
            await conn.execute("SET LOCAL lock_timeout = '5s'")
            now: int = await conn.fetchval("SELECT kanthorq_now_ms()")
            stream_rows = await conn.fetch(load("inspect_streams"), stream)
            if stream is not None and not stream_rows:
                raise UnknownStream(f"no stream named {stream!r}")
            consumer_rows = await conn.fetch(load("inspect_consumers"), stream)
            reader = OverviewReader(conn, now, limit)
            by_id = {row["id"]: row for row in stream_rows}
            streams = [await reader.stream(row) for row in stream_rows]
            consumers = [
                await reader.consumer(row, by_id.get(row["stream_id"])) for row in consumer_rows
            ]
            schedules = [
                ScheduleOverview(
                    r["name"], r["stream"], r["subject"], r["spec"], r["last_tick"], r["next_tick"]
                )
                for r in await conn.fetch(load("schedule_list"))
                if stream is None or r["stream"] == stream
            ]
        return Overview(now, limit, streams, consumers, schedules)

    async def list_tasks(
        self,
        consumer: str,
        filter: TaskFilter | None = None,
        *,
        limit: int = 50,
        order: str = "newest",
        after: str | None = None,
        timeout: float | None = None,
    ) -> list[TaskView]:
        """Up to ``limit`` tasks of ``consumer`` that ``filter`` selects, ordered by
        ``order``: ``"newest"`` event first (the default), ``"oldest"`` first, or ``"due"``
        (the next run first). ``after``: the next page, from the task after this event id
        in that order (newest and oldest only). ``timeout``: seconds the query may take, else
        :class:`TimeoutError` (a filter that few tasks match reads them all).
        :class:`UnknownConsumer` when the consumer does not exist."""
        limit = _whole(limit, "limit", 1, MAX_LIST)
        if order not in ORDERS:
            raise ConfigError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
        if after is not None and (order == "due" or not isinstance(after, str) or not after):
            raise ConfigError("after= takes an event id, with order newest or oldest")
        info = await self.consumer(consumer)
        chosen = filter or TaskFilter()
        where, params = chosen.where("t", 1)
        if order == "due" and len(chosen.states) == 1:
            # the same condition as an equality, so the (state, schedule_at, event_id) index
            # returns the tasks of that state in order (PostgreSQL before 17 does not order
            # the rows of an index scan on = ANY). Only here: the planner counts the condition
            # twice, and for the other orders it would then pick that index and sort.
            params.append(int(chosen.states[0]))
            where += f" AND t.state = ${len(params)}::SMALLINT"
        if after is not None:
            params.append(after)
            where += f" AND t.event_id {'<' if order == 'newest' else '>'} ${len(params)}"
        statement = (
            f"{info.sql('inspect_tasks')}WHERE {where}\n"
            f"ORDER BY {ORDERS[order]}\nLIMIT ${len(params) + 1}"
        )
        rows = await self.pool.fetch(statement, *params, limit, timeout=timeout)
        return [_task_view(row) for row in rows]

    async def count_tasks(
        self, consumer: str, filter: TaskFilter | None = None, *, up_to: int = EXACT_LIMIT
    ) -> int:
        """How many tasks of ``consumer`` ``filter`` selects, counted up to ``up_to`` (a
        larger count is given as ``up_to``), so it stays fast on millions of tasks."""
        limit = _whole(up_to, "up_to", 1, 1_000_000_000)
        info = await self.consumer(consumer)
        where, params = (filter or TaskFilter()).where("t", 1)
        table = task_names(info.id)["tasks"]
        count: int = await self.pool.fetchval(
            f"SELECT count(*) FROM (SELECT 1 FROM {table} AS t WHERE {where} "
            f"LIMIT ${len(params) + 1}) AS c",
            *params,
            limit,
        )
        return count

    async def get_task(self, consumer: str, event_id: str) -> TaskDetail | None:
        """The task of ``consumer`` for the event ``event_id``, with every error record and
        the event; None when the consumer has no task for it. :class:`UnknownConsumer` when
        the consumer does not exist."""
        if not isinstance(event_id, str) or not event_id:
            raise ConfigError(f"not an event id: {event_id!r}")
        info = await self.consumer(consumer)
        row = await self.pool.fetchrow(info.sql("inspect_task"), event_id)
        return None if row is None else _task_detail(info, row)

    async def get_event(self, stream: str, event_id: str) -> EventView | None:
        """The event ``event_id`` of ``stream``; None when the stream has no such event
        (deleted by retention, say). :class:`UnknownStream` when the stream does not exist."""
        validate_name(stream, "stream")
        if not isinstance(event_id, str) or not event_id:
            raise ConfigError(f"not an event id: {event_id!r}")
        found = await self.pool.fetchrow(load("stream_get"), stream)
        if found is None:
            raise UnknownStream(f"no stream named {stream!r}")
        if not found["present"]:  # its table was dropped: it holds no event
            return None
        row = await self.pool.fetchrow(render("inspect_event", stream_id=found["id"]), event_id)
        if row is None:
            return None
        return EventView(
            id=row["id"],
            subject=row["subject"],
            created_at=row["created_at"],
            metadata=_decoded(row["metadata"]),
            body=row["body"] or b"",
        )
