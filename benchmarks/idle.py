"""W7: what idle consumers cost. One kanthorq worker process with 200 consumers, on one
stream or on 200 streams, nothing published: the database's committed transactions per
second (``pg_stat_database.xact_commit`` of the benchmark's database) and the worker
process's CPU (percent of one core), measured over ``idle_seconds`` after a warm-up."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from benchmarks.config import Config
from benchmarks.db import fresh_database
from benchmarks.procs import WorkerProcess
from benchmarks.systems.base import WorkerOptions

VARIANTS = {"200 consumers 1 stream": (200, 1), "200 consumers 200 streams": (200, 200)}
WARM_UP = (
    15.0  # past the first steps, and their statistics (an idle backend flushes them after 10 s)
)


async def _commits(conn: asyncpg.Connection) -> int:
    return int(
        await conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
    )


async def w7_idle(variant: str, cfg: Config) -> dict[str, Any]:
    consumers, streams = VARIANTS[variant]
    async with fresh_database(cfg.server_dsn, "w7") as dsn:
        opts = WorkerOptions(dsn, "drain", 10, consumers, streams)
        worker = WorkerProcess("kanthorq", opts)
        await worker.start()
        try:
            await asyncio.sleep(WARM_UP)
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute("SELECT pg_stat_clear_snapshot()")
                before, cpu = await _commits(conn), worker.cpu_seconds()
                started = time.perf_counter()
                await asyncio.sleep(cfg.idle_seconds)
                await conn.execute("SELECT pg_stat_clear_snapshot()")
                after = await _commits(conn)
                elapsed = time.perf_counter() - started
                used = worker.cpu_seconds() - cpu
            finally:
                await conn.close()
        finally:
            await worker.stop()
    # the two reads of xact_commit are the measurement's own
    return {
        "tx_per_s": max(after - before - 2, 0) / elapsed,
        "cpu_pct": 100 * used / elapsed,
        "seconds": elapsed,
    }
