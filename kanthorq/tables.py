"""Stream and task tables: made whole by this package, or completed online.

A table this package creates is new and empty: it gets its columns and indexes in one
transaction. A table that another client created (KanthorQ for Go, which knows only the
contract columns) may be large and in use, so what it lacks is added without a long lock:
columns with constant defaults (no rewrite) under a short ``lock_timeout`` that is tried
again rather than queueing every writer behind it, and indexes with ``CREATE INDEX
CONCURRENTLY``, which lets writers go on while it builds.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from kanthorq.database import Conn
from kanthorq.sqlfiles import load, render, stream_names, task_names

logger = logging.getLogger(__name__)

LOCK_TIMEOUT_MS = 500  # the longest a column's ALTER waits for its lock before it tries again
MAX_WAIT = 300.0  # seconds to complete a table (lock retries, another process's index build)
_RETRY = 0.25

_CREATE_INDEX = re.compile(r"CREATE (UNIQUE )?INDEX IF NOT EXISTS ")


@dataclass(frozen=True, slots=True)
class TableSpec:
    """What a stream's or a consumer's table needs: its DDL, rendered for its id."""

    table: str  # the quoted table name
    create: str  # CREATE TABLE, for a new table
    columns: tuple[str, ...]  # the columns that a table of another client may lack ...
    add_columns: str  # ... and the ALTER statements that add them
    indexes: dict[str, str]  # quoted index name -> CREATE INDEX IF NOT EXISTS statement


def stream_spec(stream_id: str) -> TableSpec:
    return TableSpec(
        table=stream_names(stream_id)["stream"],
        create=render("stream_table", stream_id=stream_id),
        columns=("txid", "dedup_key"),
        add_columns=render("stream_columns", stream_id=stream_id),
        indexes={
            stream_names(stream_id)["stream_txid_idx"]: render(
                "stream_index_txid", stream_id=stream_id
            ),
            stream_names(stream_id)["stream_dedup_idx"]: render(
                "stream_index_dedup", stream_id=stream_id
            ),
        },
    )


def task_spec(consumer_id: str, *, rate: bool = False) -> TableSpec:
    """``rate``: the consumer is rate-limited, and needs attempted_at's index too."""
    names = task_names(consumer_id)
    indexes = {
        names["tasks_state_idx"]: render("task_index_state", consumer_id=consumer_id),
        names["tasks_ready_idx"]: render("task_index_ready", consumer_id=consumer_id),
        names["tasks_running_idx"]: render("task_index_running", consumer_id=consumer_id),
    }
    if rate:
        indexes[names["tasks_attempted_idx"]] = render(
            "task_index_attempted", consumer_id=consumer_id
        )
    return TableSpec(
        table=names["tasks"],
        create=render("task_table", consumer_id=consumer_id),
        columns=("deadline_at",),
        add_columns=render("task_columns", consumer_id=consumer_id),
        indexes=indexes,
    )


async def create(conn: Conn, spec: TableSpec) -> None:
    """The table and its indexes, in the caller's transaction (a new table is empty)."""
    await conn.execute(spec.create)
    for statement in spec.indexes.values():
        await conn.execute(statement)


def concurrently(statement: str) -> str:
    """A ``CREATE [UNIQUE] INDEX IF NOT EXISTS`` statement (after its comment lines) as
    ``CREATE [UNIQUE] INDEX CONCURRENTLY``."""
    lines = statement.strip().splitlines()
    while lines and lines[0].lstrip().startswith("--"):
        lines.pop(0)
    found = _CREATE_INDEX.match("\n".join(lines))
    if found is None:
        raise ValueError(f"not a CREATE INDEX IF NOT EXISTS statement: {statement[:60]!r}")
    text = "\n".join(lines)
    return f"CREATE {found.group(1) or ''}INDEX CONCURRENTLY IF NOT EXISTS " + text[found.end() :]


async def is_complete(conn: Conn, spec: TableSpec) -> bool:
    """Whether the table exists with every column and valid index it needs (a catalog read
    that takes no lock: it may run in any transaction)."""
    state = await conn.fetchrow(
        load("table_state"), spec.table, list(spec.columns), list(spec.indexes)
    )
    assert state is not None
    return bool(state["present"]) and _next_step(spec, state) is None


async def complete(conn: Conn, spec: TableSpec) -> bool:
    """Add what an existing table lacks, online (``conn`` must not be in a transaction).
    Whether anything was missing. Does nothing when the table does not exist."""
    deadline = time.monotonic() + MAX_WAIT
    changed = False
    while True:
        state = await conn.fetchrow(
            load("table_state"), spec.table, list(spec.columns), list(spec.indexes)
        )
        assert state is not None
        if not state["present"]:
            return changed
        todo = _next_step(spec, state)
        if todo is None:
            return changed
        if time.monotonic() > deadline:
            raise TimeoutError(f"could not complete table {spec.table} in {MAX_WAIT:g}s")
        changed = True
        await todo(conn)


_StepFn = Callable[[Conn], Awaitable[None]]


def _next_step(spec: TableSpec, state: asyncpg.Record) -> _StepFn | None:
    if state["missing_columns"]:
        return lambda conn: _add_columns(conn, spec)
    if state["invalid_indexes"]:
        if state["building"]:  # another process builds it: wait for it
            return _pause
        names = list(state["invalid_indexes"])
        return lambda conn: _drop_invalid(conn, names)
    if state["missing_indexes"]:
        name = state["missing_indexes"][0]
        return lambda conn: _build(conn, spec, name)
    return None


async def _pause(conn: Conn) -> None:
    await asyncio.sleep(_RETRY)


async def _add_columns(conn: Conn, spec: TableSpec) -> None:
    started = time.monotonic()
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'")
            await conn.execute(spec.add_columns)
    except asyncpg.LockNotAvailableError:
        logger.info(
            "table %s is busy: adding columns %s again in %.2fs",
            spec.table,
            ", ".join(spec.columns),
            _RETRY,
        )
        await asyncio.sleep(_RETRY)
        return
    logger.info(
        "added %s to table %s (%.0f ms)",
        ", ".join(spec.columns),
        spec.table,
        (time.monotonic() - started) * 1000,
    )


async def _drop_invalid(conn: Conn, names: list[str]) -> None:
    for name in names:  # a concurrent build that failed left it behind
        logger.warning("dropping the invalid index %s (a failed build) to build it again", name)
        await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


async def _build(conn: Conn, spec: TableSpec, name: str) -> None:
    started = time.monotonic()
    logger.info("building index %s on table %s (concurrently)", name, spec.table)
    await conn.execute(concurrently(spec.indexes[name]))
    logger.info("built index %s in %.1fs", name, time.monotonic() - started)
