"""W6: kanthorq's drain with a backlog, seeded with COPY straight into its tables.

- ``waiting``: ``backlog`` events in the stream, none converted; the consumer starts at
  the beginning of the stream. The first ``backlog_slice`` completions are timed.
- ``completed``: ``backlog`` events and their ``backlog`` completed tasks (the consumer's
  cursor past them), then ``backlog_slice`` new events published as in W2; their draining
  is timed.

The seeded rows are what kanthorq writes: ``event_<ulid>`` ids, the JSON body, ``{}``
metadata, times in ms, and ``txid`` from its default; completed tasks in state 101 after
one attempt. The tables are then vacuumed and analysed (where autovacuum would have them
after such a backlog built up), and a checkpoint is taken so that flushing the seed does
not fall inside the clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import asyncpg

import kanthorq
from benchmarks.config import Config
from benchmarks.db import fresh_database
from benchmarks.drain import timed_drain
from benchmarks.payload import SUBJECT, batches, encode, payload
from benchmarks.systems.base import WorkerOptions
from benchmarks.systems.kanthorq_sys import (
    SYSTEM,
    prepare_app,
    stream_table,
    subscribe_all,
    task_tables,
)
from benchmarks.workloads import publish_all
from kanthorq.ids import new_id, now_ms

CHUNK = 50_000
EVENT_COLUMNS = ("id", "subject", "body", "metadata", "created_at")
TASK_COLUMNS = (
    "event_id",
    "subject",
    "state",
    "schedule_at",
    "finalized_at",
    "attempt_count",
    "attempted_at",
    "created_at",
    "updated_at",
)
VARIANTS = ("waiting", "completed")


def _chunks(total: int) -> Iterator[int]:
    for start in range(0, total, CHUNK):
        yield min(CHUNK, total - start)


async def _seed_events(conn: asyncpg.Connection, table: str, total: int, tasks: str) -> str:
    """COPY ``total`` events (and, with ``tasks``, their completed tasks); the last id."""
    body = encode(payload(0))
    last = ""
    for size in _chunks(total):
        ms = now_ms()
        ids = [new_id("event") for _ in range(size)]
        events = [(i, SUBJECT, body, "{}", ms) for i in ids]
        await conn.copy_records_to_table(table.strip('"'), records=events, columns=EVENT_COLUMNS)
        if tasks:
            rows = [(i, SUBJECT, 101, ms, ms, 1, ms, ms, ms) for i in ids]
            await conn.copy_records_to_table(tasks.strip('"'), records=rows, columns=TASK_COLUMNS)
        last = max(last, max(ids))
    return last


async def _move_cursor(conn: asyncpg.Connection, stream: str) -> None:
    """Put the consumer's cursor on the last seeded event, as conversion would have."""
    await conn.execute(
        f"""
        UPDATE kanthorq_consumer_registry AS r
        SET cursor = last.id, cursor_txid = last.txid
        FROM (SELECT id, txid FROM {stream} ORDER BY txid DESC, id DESC LIMIT 1) AS last
        """
    )


async def seed(dsn: str, cfg: Config, variant: str) -> str:
    """Seed the backlog of ``variant``; the id of the last seeded event."""
    app = kanthorq.App(dsn)
    subscribe_all(app, WorkerOptions(dsn, "drain", cfg.concurrency, 1), lambda body: None)
    async with app:
        await prepare_app(app)
    conn = await asyncpg.connect(dsn)
    try:
        stream = await stream_table(conn)
        (tasks,) = await task_tables(conn)
        last = await _seed_events(
            conn, stream, cfg.backlog, tasks if variant == "completed" else ""
        )
        if variant == "completed":
            await _move_cursor(conn, stream)
        for table in (stream, tasks):
            await conn.execute(f"VACUUM ANALYZE {table}")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    return last


def completed_after(after: str) -> Any:
    async def count(conn: asyncpg.Connection) -> int:
        total = 0
        for table in await task_tables(conn):
            total += await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE state = 101 AND event_id > $1", after
            )
        return int(total)

    return count


async def w6_backlog(variant: str, cfg: Config) -> dict[str, Any]:
    async with fresh_database(cfg.server_dsn, f"w6_{variant}") as dsn:
        last = await seed(dsn, cfg, variant)
        after = ""
        if variant == "completed":
            after = last
            await publish_all(SYSTEM, dsn, batches(cfg.backlog_slice, cfg.batch))
        opts = WorkerOptions(dsn, "drain", cfg.concurrency, 1)
        result = await timed_drain(
            SYSTEM.name, opts, completed_after(after), cfg.backlog_slice, cfg
        )
    result["backlog"] = cfg.backlog
    return result
