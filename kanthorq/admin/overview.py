"""The figures of ``kanthorq show``, kept fast on streams of millions of events.

Counts are exact while they are below a limit (an index scan that stops there); a larger
count is an estimate from PostgreSQL's statistics: the planner's row estimate, the same
figure ``EXPLAIN`` shows. Whatever is estimated is named in the result's ``estimated``.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from kanthorq.admin.filters import state_name
from kanthorq.admin.views import ConsumerOverview, StreamOverview
from kanthorq.entities import TaskState
from kanthorq.sqlfiles import render, stream_names

# the order in which a task moves through its states, for showing them
STATE_ORDER = (
    TaskState.PENDING,
    TaskState.AVAILABLE,
    TaskState.RUNNING,
    TaskState.RETRYABLE,
    TaskState.COMPLETED,
    TaskState.DISCARDED,
    TaskState.CANCELLED,
)

Connection = asyncpg.Connection | PoolConnectionProxy


class OverviewReader:
    """Reads streams and consumers on one connection (in the caller's snapshot), at ``now``
    (ms), counting exactly up to ``limit``."""

    def __init__(self, conn: Connection, now: int, limit: int) -> None:
        self._conn = conn
        self._now = now
        self._limit = limit

    async def _estimate(self, statement: str, *args: Any) -> int:
        """The planner's row estimate of an ``EXPLAIN (FORMAT JSON)`` statement."""
        plan = json.loads(await self._conn.fetchval(statement, *args))
        return int(plan[0]["Plan"]["Plan Rows"])

    async def stream(self, row: asyncpg.Record) -> StreamOverview:
        stream_id: str = row["id"]
        if not row["has_table"]:
            return StreamOverview(
                row["name"], stream_id, None, note="its event table does not exist"
            )
        table = stream_names(stream_id)["stream"]
        found = await self._conn.fetchrow(
            render("inspect_stream", stream_id=stream_id), self._limit, table
        )
        assert found is not None
        events: int = found["counted"]
        estimated: tuple[str, ...] = ()
        if events >= self._limit:
            events = max(self._limit, found["estimated"] or 0)
            estimated = ("events",)
        return StreamOverview(
            row["name"],
            stream_id,
            events,
            newest_event_id=found["newest_id"],
            newest_event_at=found["newest_at"],
            oldest_event_at=found["oldest_at"],
            estimated=estimated,
        )

    async def consumer(
        self, row: asyncpg.Record, stream: asyncpg.Record | None
    ) -> ConsumerOverview:
        figures: dict[str, Any] = {}
        estimated: list[str] = []
        notes: list[str] = []
        if stream is None or not stream["has_table"]:
            notes.append("its stream's event table does not exist")
        else:
            figures.update(await self._lag(row, stream["has_txid"], estimated))
        if not row["has_table"]:
            notes.append("its task table does not exist")
        else:
            figures["tasks"] = await self._states(row["id"], estimated)
            figures.update(await self._due(row["id"], row["visibility_timeout"]))
        return ConsumerOverview(
            name=row["name"],
            stream=row["stream_name"],
            includes=tuple(row["subject_includes"]),
            excludes=tuple(row["subject_excludes"]),
            attempt_max=row["attempt_max"],
            visibility_timeout_ms=row["visibility_timeout"],
            cursor=row["cursor"],
            estimated=tuple(estimated),
            note="; ".join(notes) or None,
            **figures,
        )

    async def _lag(
        self, row: asyncpg.Record, has_txid: bool, estimated: list[str]
    ) -> dict[str, int]:
        """Events past the cursor (behind) and those the filters select (lag): counted up to
        the limit; beyond it, the planner's estimate of the events past the cursor, and the
        lag in the proportion the counted events matched."""
        stream_id = row["stream_id"]
        filters = [list(row["subject_includes"]), list(row["subject_excludes"])]
        if has_txid and row["coherent"]:
            counting = render("inspect_lag", stream_id=stream_id)
            estimating = render("inspect_lag_estimate", stream_id=stream_id)
            filters += [row["skip_id"], row["skip_txid"]]
        else:  # another client converts it by its cursor alone, or the stream lacks txid
            counting = render("inspect_lag_by_id", stream_id=stream_id)
            estimating = render("inspect_lag_by_id_estimate", stream_id=stream_id)
        cursor = (row["cursor_txid"], row["cursor"])
        found = await self._conn.fetchrow(counting, *cursor, self._limit, *filters)
        assert found is not None
        scanned: int = found["scanned"]
        matched: int = found["matched"]
        if scanned < self._limit:
            return {"behind": scanned, "lag": matched}
        behind = max(scanned, await self._estimate(estimating, *cursor))
        estimated.extend(("behind", "lag"))
        return {"behind": behind, "lag": round(matched * behind / scanned)}

    async def _states(self, consumer_id: str, estimated: list[str]) -> dict[str, int]:
        """Tasks per state: every known state (0 when none), and any other code found."""
        tasks = {state_name(s): 0 for s in STATE_ORDER}
        rows = await self._conn.fetch(
            render("inspect_states", consumer_id=consumer_id), self._limit
        )
        for found in rows:
            name = state_name(found["state"])
            count: int = found["counted"]
            if count >= self._limit:
                statement = render("inspect_state_estimate", consumer_id=consumer_id)
                count = max(self._limit, await self._estimate(statement, found["state"]))
                estimated.append(f"tasks.{name}")
            tasks[name] = count
        return tasks

    async def _due(self, consumer_id: str, visibility_timeout_ms: int) -> dict[str, int | None]:
        found = await self._conn.fetchrow(
            render("inspect_due", consumer_id=consumer_id), self._now, visibility_timeout_ms
        )
        assert found is not None
        oldest = found["oldest_due_at"]
        return {
            "oldest_due_age_ms": None if oldest is None else max(0, self._now - oldest),
            "past_visibility_timeout": found["past_timeout"],
        }
