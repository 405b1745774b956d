"""Retention: deleting old events and pruning finalized tasks, in bounded batches.

An event is deleted only when every consumer of its stream is done with it: each has
converted it (its cursor is past the event) and none has an open task for it (pending,
available, running or retryable). ``force=True`` deletes old events regardless.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from kanthorq.admin.base import AdminBase, ConsumerInfo
from kanthorq.admin.results import Changed
from kanthorq.admin.tasks import DEFAULT_BATCH, batch_size_of
from kanthorq.checks import moment
from kanthorq.sqlfiles import stream_names, task_names

OPEN_STATES = "0, 1, 2, 102"
FINAL_STATES = "101, -101, -102"


def _converted(info: ConsumerInfo, first: int) -> tuple[str, list[object]]:
    """The condition that the consumer has converted event ``c``, with its parameters
    numbered from ``$first``: past its position in (txid, id) order, or passed over since a
    takeover; by id alone for a consumer another client converts (KanthorQ for Go)."""
    if not info.coherent:
        return f"c.id::TEXT <= ${first}::TEXT", [info.cursor]
    txid, cursor, skip_id, skip_txid = (f"${first + n}" for n in range(4))
    condition = (
        f"((c.txid, c.id::TEXT) <= ({txid}::TEXT::XID8, {cursor}::TEXT)"
        f" OR (c.id::TEXT <= {skip_id}::TEXT AND c.txid < {skip_txid}::TEXT::XID8))"
    )
    return condition, [info.cursor_txid, info.cursor, info.skip_id, info.skip_txid]


def _done_with(consumers: list[ConsumerInfo], first: int) -> tuple[str, str, list[object]]:
    """Conditions on candidate events ``c``: every consumer converted it, and none has an
    open task for it; with their parameters, numbered from ``$first``."""
    converted: list[str] = []
    closed: list[str] = []
    params: list[object] = []
    for info in consumers:
        condition, values = _converted(info, first + len(params))
        params += values
        converted.append(condition)
        closed.append(
            f"NOT EXISTS (SELECT 1 FROM {task_names(info.id)['tasks']} AS t "
            f"WHERE t.event_id = c.id AND t.state IN ({OPEN_STATES}))"
        )
    return " AND ".join(converted) or "TRUE", " AND ".join(closed) or "TRUE", params


class Retention(AdminBase):
    """``delete_events`` and ``prune_tasks``."""

    async def delete_events(
        self,
        stream: str,
        *,
        before: datetime | timedelta,
        force: bool = False,
        batch_size: int = DEFAULT_BATCH,
    ) -> Changed:
        """Delete the stream's events created before ``before`` (an aware datetime, or an age
        by the database's clock) that every consumer is done with (all of them with
        ``force=True``). Reports the events left alone and why."""
        when = moment(before, "before")
        size = batch_size_of(batch_size)
        info = await self.stream(stream)
        cutoff = await when.resolve(self.pool)
        consumers = [] if force else await self.consumers(stream)
        converted, closed, params = _done_with(consumers, first=4)
        table = stream_names(info.id)["stream"]
        # a stream that only another client's consumers read may lack txid (their condition
        # is by id alone)
        has_txid = await self.pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) "
            "AND attname = 'txid' AND NOT attisdropped)",
            table,
        )
        txid = "e.txid" if has_txid else "'0'::XID8 AS txid"
        sql = f"""
            WITH c AS (
                SELECT e.id, {txid} FROM {table} AS e
                WHERE e.id > $1 AND e.created_at < $2
                ORDER BY e.id
                LIMIT $3
            ),
            unconverted AS (SELECT c.id FROM c WHERE NOT ({converted})),
            busy AS (
                SELECT c.id FROM c WHERE c.id NOT IN (SELECT id FROM unconverted) AND NOT ({closed})
            ),
            gone AS (
                DELETE FROM {table} AS e
                USING c
                WHERE e.id = c.id
                  AND c.id NOT IN (SELECT id FROM unconverted)
                  AND c.id NOT IN (SELECT id FROM busy)
                RETURNING 1
            )
            SELECT (SELECT max(id) FROM c) AS last,
                   (SELECT count(*) FROM gone) AS deleted,
                   (SELECT count(*) FROM unconverted) AS unconverted,
                   (SELECT count(*) FROM busy) AS busy
        """
        result = Changed(verb="deleted")
        last = ""
        while True:
            row = await self.pool.fetchrow(sql, last, cutoff, size, *params)
            assert row is not None
            if row["last"] is None:
                return result
            last = row["last"]
            result.updated += row["deleted"]
            result.skip("not converted by every consumer yet", row["unconverted"])
            result.skip("open tasks", row["busy"])

    async def prune_tasks(
        self, consumer: str, *, before: datetime | timedelta, batch_size: int = DEFAULT_BATCH
    ) -> Changed:
        """Delete the consumer's completed, cancelled and discarded tasks finalized before
        ``before`` (an aware datetime, or an age by the database's clock). Open tasks created
        before then are counted as left alone."""
        when = moment(before, "before")
        size = batch_size_of(batch_size)
        info = await self.consumer(consumer)
        cutoff = await when.resolve(self.pool)
        table = task_names(info.id)["tasks"]
        sql = f"""
            WITH c AS (
                SELECT t.event_id FROM {table} AS t
                WHERE t.event_id > $1 AND t.state IN ({FINAL_STATES}) AND t.finalized_at < $2
                ORDER BY t.event_id
                LIMIT $3
            ),
            gone AS (
                DELETE FROM {table} AS t USING c
                WHERE t.event_id = c.event_id AND t.state IN ({FINAL_STATES})
                RETURNING 1
            )
            SELECT (SELECT max(event_id) FROM c) AS last, (SELECT count(*) FROM gone) AS deleted
        """
        result = Changed(verb="deleted")
        last = ""
        while True:
            row = await self.pool.fetchrow(sql, last, cutoff, size)
            assert row is not None
            if row["last"] is None:
                break
            last = row["last"]
            result.updated += row["deleted"]
        still_open = await self.pool.fetchval(
            f"SELECT count(*) FROM {table} WHERE state IN ({OPEN_STATES}) AND created_at < $1",
            cutoff,
        )
        result.skip("not finalized", still_open)
        return result
