"""Task management: cancel, resume and retry, in bounded batches.

Each operation walks the selected tasks in event id order, one batch per statement (and so
per transaction), so a filter that selects a million tasks never holds a million row locks.
Rows are locked with FOR UPDATE: a task a worker changes meanwhile is re-checked, and left
alone when it is no longer in a state the operation may change.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kanthorq.admin.base import AdminBase, ConsumerInfo
from kanthorq.admin.filters import TaskFilter, state_name
from kanthorq.admin.results import Changed
from kanthorq.entities import ATTEMPT_BASE_KEY, TaskState
from kanthorq.errors import ConfigError
from kanthorq.publisher import channel
from kanthorq.sqlfiles import stream_names, task_names

DEFAULT_BATCH = 1000
MAX_BATCH = 100_000


@dataclass(frozen=True, slots=True)
class Transition:
    """Which states a task may leave, and the SET clause that moves it."""

    verb: str
    allowed: tuple[TaskState, ...]
    assign: str
    wakes: bool  # the tasks become runnable: tell the workers
    needs_event: bool = False  # only tasks whose event is still in the stream


CANCEL = Transition(
    "cancel",
    (TaskState.PENDING, TaskState.AVAILABLE, TaskState.RETRYABLE),
    "state = -101, finalized_at = kanthorq_now_ms(), updated_at = kanthorq_now_ms()",
    wakes=False,
)
# the attempt budget is given back by recording the attempts so far as the new base; the
# count itself keeps growing, so the fencing of acks on the attempt stays exact
RESUME = Transition(
    "resume",
    (TaskState.DISCARDED, TaskState.CANCELLED),
    "state = 1, schedule_at = kanthorq_now_ms(), finalized_at = 0, "
    f"metadata = t.metadata || jsonb_build_object('{ATTEMPT_BASE_KEY}', t.attempt_count), "
    "updated_at = kanthorq_now_ms()",
    wakes=True,
)
# a finished task runs again as a new attempt: its count keeps growing (a late ack of an
# earlier attempt stays fenced out) and its budget starts again, as after a resume; a task
# whose event retention deleted is left alone, since it has nothing to run on
RERUN = Transition(
    "rerun",
    (TaskState.COMPLETED, TaskState.DISCARDED, TaskState.CANCELLED),
    RESUME.assign,
    wakes=True,
    needs_event=True,
)
RETRY_NOW = Transition(
    "retry",
    (TaskState.RETRYABLE,),
    "state = 1, schedule_at = kanthorq_now_ms(), updated_at = kanthorq_now_ms()",
    wakes=True,
)


def _selection(event_ids: Iterable[str] | None, filter: TaskFilter | None) -> TaskFilter:
    if event_ids is None and filter is None:
        raise ConfigError(
            "give event ids or a filter (TaskFilter() selects every task of the consumer)"
        )
    chosen = filter or TaskFilter()
    if event_ids is not None:
        ids = TaskFilter.build(event_ids=event_ids).event_ids
        if not ids:
            raise ConfigError("event_ids is empty: no task is selected")
        chosen = TaskFilter(chosen.states, chosen.subject, chosen.older_than, ids)
    return chosen


def batch_size_of(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BATCH:
        raise ConfigError(f"batch_size must be a whole number from 1 to {MAX_BATCH}, got {value!r}")
    return value


class TaskOps(AdminBase):
    """``cancel``, ``resume``, ``rerun`` and ``retry_now``."""

    async def cancel(
        self,
        consumer: str,
        event_ids: Iterable[str] | None = None,
        *,
        filter: TaskFilter | None = None,
        batch_size: int = DEFAULT_BATCH,
    ) -> Changed:
        """Cancel pending, available and retryable tasks: they will not run unless resumed.
        (A running task is cancelled from its handler, with ``msg.cancel()``.)"""
        return await self._apply(CANCEL, consumer, event_ids, filter, batch_size)

    async def resume(
        self,
        consumer: str,
        event_ids: Iterable[str] | None = None,
        *,
        filter: TaskFilter | None = None,
        batch_size: int = DEFAULT_BATCH,
    ) -> Changed:
        """Make discarded and cancelled tasks available now, with their attempts given back."""
        return await self._apply(RESUME, consumer, event_ids, filter, batch_size)

    async def rerun(
        self,
        consumer: str,
        event_ids: Iterable[str] | None = None,
        *,
        filter: TaskFilter | None = None,
        batch_size: int = DEFAULT_BATCH,
    ) -> Changed:
        """Run completed, discarded and cancelled tasks again (after fixing a handler): they
        become available now, as new attempts with their budget starting again. Tasks whose
        event was deleted (retention) are left alone."""
        return await self._apply(RERUN, consumer, event_ids, filter, batch_size)

    async def retry_now(
        self,
        consumer: str,
        event_ids: Iterable[str] | None = None,
        *,
        filter: TaskFilter | None = None,
        batch_size: int = DEFAULT_BATCH,
    ) -> Changed:
        """Make retryable tasks available now, instead of after their backoff."""
        return await self._apply(RETRY_NOW, consumer, event_ids, filter, batch_size)

    async def _apply(
        self,
        move: Transition,
        consumer: str,
        event_ids: Iterable[str] | None,
        filter: TaskFilter | None,
        batch_size: int,
    ) -> Changed:
        selection = _selection(event_ids, filter)  # checked before any SQL runs
        size = batch_size_of(batch_size)
        info = await self.consumer(consumer)
        result = await self._left_alone(move, info, selection)
        table = task_names(info.id)["tasks"]
        where, params = selection.where("t", first=4)
        if move.needs_event:
            where += f" AND {_event_exists(info)}"
        allowed = [int(s) for s in move.allowed]
        sql = f"""
            WITH picked AS (
                SELECT t.event_id FROM {table} AS t
                WHERE t.event_id > $1 AND t.state = ANY($2::SMALLINT[]) AND {where}
                ORDER BY t.event_id
                LIMIT $3
                FOR UPDATE
            ),
            moved AS (
                UPDATE {table} AS t SET {move.assign}
                FROM picked
                WHERE t.event_id = picked.event_id AND t.state = ANY($2::SMALLINT[])
                RETURNING 1
            )
            SELECT (SELECT max(event_id) FROM picked) AS last, (SELECT count(*) FROM moved) AS n
        """
        last = ""
        while True:
            row = await self.pool.fetchrow(sql, last, allowed, size, *params)
            assert row is not None
            if row["last"] is None:
                break
            last = row["last"]
            result.updated += row["n"]
        if move.wakes and result.updated:
            await self.pool.execute("SELECT pg_notify($1, '')", channel(info.stream_id))
        return result

    async def _left_alone(
        self, move: Transition, info: ConsumerInfo, selection: TaskFilter
    ) -> Changed:
        """What the operation will not change, and why: the selected tasks in other states,
        those whose event is gone (when it needs one), and the event ids asked for that
        have no task (named in ``details["not_found"]``)."""
        table = task_names(info.id)["tasks"]
        where, params = selection.where("t", first=2)
        allowed = [int(s) for s in move.allowed]
        rows = await self.pool.fetch(
            f"SELECT t.state, count(*) AS n FROM {table} AS t "
            f"WHERE NOT t.state = ANY($1::SMALLINT[]) AND {where} GROUP BY t.state",
            allowed,
            *params,
        )
        result = Changed()
        for row in rows:
            result.skip(f"wrong state ({state_name(row['state'])})", row["n"])
        if move.needs_event:
            gone = await self.pool.fetchval(
                f"SELECT count(*) FROM {table} AS t WHERE t.state = ANY($1::SMALLINT[]) "
                f"AND {where} AND NOT {_event_exists(info)}",
                allowed,
                *params,
            )
            result.skip("its event was deleted", gone)
        if selection.event_ids:
            missing = await self.pool.fetchval(
                f"SELECT array_agg(a.id ORDER BY a.id) FROM unnest($1::TEXT[]) AS a(id) "
                f"WHERE NOT EXISTS (SELECT 1 FROM {table} AS t WHERE t.event_id = a.id)",
                list(selection.event_ids),
            )
            if missing:
                result.skip("not found", len(missing))
                result.details["not_found"] = list(missing)
        return result


def _event_exists(info: ConsumerInfo) -> str:
    """The condition that task ``t``'s event is still in its stream."""
    stream = stream_names(info.stream_id)["stream"]
    return f"EXISTS (SELECT 1 FROM {stream} AS e WHERE e.id = t.event_id)"
