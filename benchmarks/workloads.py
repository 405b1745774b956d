"""W1 to W5: each measures one system in a database of its own (W6 is in backlog.py)."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from benchmarks.config import Config
from benchmarks.db import fresh_database
from benchmarks.drain import timed_drain
from benchmarks.payload import batches, payload, stamped
from benchmarks.procs import WorkerProcess
from benchmarks.systems.base import Body, System, WorkerOptions
from benchmarks.systems.kanthorq_x2 import KanthorqX2
from benchmarks.systems.raw import Raw

Result = dict[str, Any]
IDLE_BEFORE_LATENCY = 1.0  # seconds the W3 worker idles before the first publish


async def publish_all(system: System, dsn: str, items: list[list[Body]]) -> None:
    """Publish untimed (the events a drain starts from), through the system's batch API."""
    pub = await system.open_publisher(dsn, 1)
    try:
        for batch in items:
            await pub.many(pub.prepare(batch))
    finally:
        await pub.close()


async def w1_publish(system: System, cfg: Config) -> Result:
    """W1: ``events`` events in batches of ``batch``, one connection."""
    async with fresh_database(cfg.server_dsn, f"w1_{system.name}") as dsn:
        await system.install(dsn)
        pub = await system.open_publisher(dsn, 1)
        try:
            prepared = [pub.prepare(b) for b in batches(cfg.events, cfg.batch)]
            start = time.perf_counter()
            for item in prepared:
                await pub.many(item)
            seconds = time.perf_counter() - start
        finally:
            await pub.close()
    return {"events": cfg.events, "seconds": seconds, "events_per_s": cfg.events / seconds}


def counter(system: System, expected: int) -> Callable[[asyncpg.Connection], Awaitable[int]]:
    async def count(conn: asyncpg.Connection) -> int:
        return await system.completed(conn, expected)

    return count


async def w2_drain(system: System, cfg: Config, consumers: int = 1) -> Result:
    """W2 (and W4 with ``consumers`` > 1): drain published events with one worker process."""
    label = f"w{2 if consumers == 1 else 4}_{system.name}"
    async with fresh_database(cfg.server_dsn, label) as dsn:
        await system.install(dsn)
        items = batches(cfg.events, cfg.batch)
        if isinstance(system, Raw):
            await system.seed_jobs(dsn, items)
            done, seconds = await system.drain(dsn, cfg.concurrency)
            return {"tasks": done, "seconds": seconds, "tasks_per_s": done / seconds}
        if isinstance(system, KanthorqX2):  # its own publish and clock: see kanthorq_x2.py
            target = cfg.events * consumers
            return await system.drain(dsn, items, counter(system, target), target, cfg, consumers)
        await publish_all(system, dsn, items)
        opts = WorkerOptions(dsn, "drain", cfg.concurrency, consumers)
        target = cfg.events * consumers
        return await timed_drain(system.name, opts, counter(system, target), target, cfg)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


async def _publish_spaced(system: System, dsn: str, cfg: Config) -> None:
    pub = await system.open_publisher(dsn, 1)
    try:
        start = time.perf_counter()
        for i in range(cfg.latency_count):
            await asyncio.sleep(max(0.0, start + i * cfg.latency_gap - time.perf_counter()))
            await pub.one(stamped(i))
    finally:
        await pub.close()


async def w3_latency(system: System, cfg: Config) -> Result:
    """W3: an idle worker; single publishes ``latency_gap`` apart; publish-to-handler ms."""
    async with fresh_database(cfg.server_dsn, f"w3_{system.name}") as dsn:
        await system.install(dsn)
        worker = WorkerProcess(system.name, WorkerOptions(dsn, "latency", cfg.concurrency, 1))
        try:
            await worker.start()
            await asyncio.sleep(IDLE_BEFORE_LATENCY)
            await _publish_spaced(system, dsn, cfg)
            await worker.wait_latencies(cfg.latency_count, timeout=30.0)
        finally:
            await worker.stop()
    got = worker.latencies
    if len(got) < cfg.latency_count:
        raise RuntimeError(f"{len(got)} of {cfg.latency_count} events reached the handler")
    return {
        "events": len(got),
        "p50_ms": percentile(got, 50),
        "p95_ms": percentile(got, 95),
        "p99_ms": percentile(got, 99),
        "max_ms": max(got),
        "mean_ms": statistics.fmean(got),
    }


async def w4_fanout(system: System, cfg: Config) -> Result:
    """W4: ``events`` events, ``fanout_consumers`` consumers that all match them."""
    return await w2_drain(system, cfg, consumers=cfg.fanout_consumers)


async def _publish_loop(pub: Any, until: float, ident: int) -> int:
    sent = 0
    while time.perf_counter() < until:
        await pub.one(payload(ident * 1_000_000 + sent))
        sent += 1
    return sent


async def w5_concurrent(system: System, cfg: Config) -> Result:
    """W5: ``publishers`` concurrent publishers, one event per transaction, for a while."""
    async with fresh_database(cfg.server_dsn, f"w5_{system.name}") as dsn:
        await system.install(dsn)
        pub = await system.open_publisher(dsn, cfg.publishers)
        try:
            for _ in range(2):  # warm up: every connection open, every statement prepared
                await asyncio.gather(*(pub.one(payload(i)) for i in range(cfg.publishers)))
            start = time.perf_counter()
            until = start + cfg.publish_seconds
            sent = await asyncio.gather(
                *(_publish_loop(pub, until, i) for i in range(cfg.publishers))
            )
            seconds = time.perf_counter() - start
        finally:
            await pub.close()
    total = sum(sent)
    return {"transactions": total, "seconds": seconds, "tx_per_s": total / seconds}


WORKLOADS: dict[str, Callable[[System, Config], Awaitable[Result]]] = {
    "W1": w1_publish,
    "W2": w2_drain,
    "W3": w3_latency,
    "W4": w4_fanout,
    "W5": w5_concurrent,
}
