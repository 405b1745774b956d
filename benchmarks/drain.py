"""Timing a worker process: from its ``READY`` until the database shows the tasks done."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks.config import Config
from benchmarks.procs import WorkerProcess
from benchmarks.systems.base import WorkerOptions

Counter = Callable[[asyncpg.Connection], Awaitable[int]]


class DrainTimeout(RuntimeError):
    pass


async def watch(
    worker: WorkerProcess, conn: asyncpg.Connection, count: Counter, target: int, cfg: Config
) -> float:
    """Poll until ``count`` reaches ``target``; the seconds since the worker was ready."""
    deadline = worker.ready_at + cfg.drain_timeout
    while True:
        done = await count(conn)
        now = time.perf_counter()
        worker.sample()
        if done >= target:
            return now - worker.ready_at
        if now > deadline:
            raise DrainTimeout(f"{done} of {target} tasks done after {cfg.drain_timeout:.0f}s")
        assert worker.proc is not None
        if worker.proc.returncode is not None:
            raise RuntimeError(f"the worker exited with {worker.proc.returncode}")
        await asyncio.sleep(cfg.poll)


async def timed_drain(
    system: str,
    opts: WorkerOptions,
    count: Counter,
    target: int,
    cfg: Config,
    *,
    profile: Path | None = None,
    count_queries: bool = False,
) -> dict[str, Any]:
    """Run one worker process until ``target`` tasks are done: throughput, memory, CPU."""
    worker = WorkerProcess(system, opts, count_queries=count_queries, profile=profile)
    conn = await asyncpg.connect(opts.dsn)
    try:
        await worker.start()
        seconds = await watch(worker, conn, count, target, cfg)
        cpu = worker.cpu_since_ready()
    finally:
        await worker.stop()
        await conn.close()
    result: dict[str, Any] = {
        "tasks": target,
        "seconds": seconds,
        "tasks_per_s": target / seconds,
        "worker_cpu_pct": 100 * cpu / seconds,
        **worker.memory(),
    }
    if worker.stats:
        result["queries"] = worker.stats
    return result
