"""``python -m benchmarks --profile DIR``: where kanthorq's time goes, outside the timed rounds.

- W1 in this process: wall time against this process's CPU time (the rest is waiting on
  the database), round trips per batch (asyncpg instrumented here), and a cProfile of a
  second pass (``w1.pstats``, top functions in the summary).
- W2 and W3 in a worker process: py-spy samples it (``--idle``, so waiting shows as the
  event loop's ``select``), and the worker counts its round trips per statement.
- W6 (when selected with ``--only``) in a worker process, as W2, for both backlogs.
- The PostgreSQL server's CPU time over each part, beside the worker's.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import io
import json
import pstats
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks import backlog, instrument
from benchmarks.config import Config
from benchmarks.db import fresh_database
from benchmarks.drain import timed_drain
from benchmarks.payload import batches, stamped
from benchmarks.procs import WorkerProcess
from benchmarks.systems.base import WorkerOptions
from benchmarks.systems.kanthorq_sys import SYSTEM
from benchmarks.workloads import counter, publish_all

IDLE_LEAVES = ("select (selectors.py", "_run_once (asyncio/base_events.py", "poll (")


def postgres_cpu() -> dict[int, float]:
    """CPU seconds of each PostgreSQL process on this machine (other users' too), by pid;
    empty without psutil."""
    try:
        import psutil  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        return {}
    out: dict[int, float] = {}
    for proc in psutil.process_iter(["name"]):
        if (proc.info.get("name") or "").startswith("postgres"):
            with contextlib.suppress(Exception):
                times = proc.cpu_times()
                out[proc.pid] = times.user + times.system
    return out


def server_cpu() -> float:
    """CPU seconds of every PostgreSQL process on this machine (other users' too)."""
    return sum(postgres_cpu().values())


async def _w1_pass(dsn: str, cfg: Config, profiler: cProfile.Profile | None) -> dict[str, Any]:
    pub = await SYSTEM.open_publisher(dsn, 1)
    try:
        prepared = [pub.prepare(b) for b in batches(cfg.events, cfg.batch)]
        instrument.counts.clear()
        instrument.prepares.clear()
        instrument.seconds.clear()
        cpu, wall, pg = time.process_time(), time.perf_counter(), server_cpu()
        if profiler is not None:
            profiler.enable()
        for item in prepared:
            await pub.many(item)
        if profiler is not None:
            profiler.disable()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        pg = server_cpu() - pg
    finally:
        await pub.close()
    return {
        "seconds": wall,
        "events_per_s": cfg.events / wall,
        "python_cpu_pct_of_wall": 100 * cpu / wall,
        "server_cpu_s": pg,
        **instrument.snapshot(),
    }


def _top(profiler: cProfile.Profile, out: Path, limit: int = 15) -> str:
    profiler.dump_stats(str(out))
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(limit)
    return text.getvalue()


async def profile_w1(cfg: Config, outdir: Path) -> dict[str, Any]:
    instrument.install()
    result: dict[str, Any] = {}
    async with fresh_database(cfg.server_dsn, "prof_w1") as dsn:
        await SYSTEM.install(dsn)
        result["plain"] = await _w1_pass(dsn, cfg, None)
    profiler = cProfile.Profile()
    async with fresh_database(cfg.server_dsn, "prof_w1p") as dsn:
        await SYSTEM.install(dsn)
        result["profiled"] = await _w1_pass(dsn, cfg, profiler)
    result["cprofile_top"] = _top(profiler, outdir / "w1.pstats")
    return result


def collapse(raw: Path) -> dict[str, Any]:
    """Summarise py-spy's raw (collapsed) stacks: idle share, top leaves, top inclusive."""
    if not raw.exists():
        return {}
    leaves: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = idle = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        frames = [f for f in stack.split(";") if f.strip()]
        total += count
        leaf = frames[-1] if frames else "?"
        if any(mark in leaf for mark in IDLE_LEAVES):
            idle += count
            continue
        leaves[leaf] += count
        for frame in set(frames):
            inclusive[frame] += count
    busy = max(total - idle, 1)
    return {
        "samples": total,
        "idle_pct": 100 * idle / max(total, 1),
        "top_self_pct_of_busy": [(f, round(100 * c / busy, 1)) for f, c in leaves.most_common(20)],
        "top_inclusive_pct_of_busy": [
            (f, round(100 * c / busy, 1)) for f, c in inclusive.most_common(40)
        ],
    }


async def _profiled_drain(
    dsn: str, cfg: Config, raw: Path, count: Any, target: int
) -> dict[str, Any]:
    opts = WorkerOptions(dsn, "drain", cfg.concurrency, 1)
    pg = server_cpu()
    result = await timed_drain(
        SYSTEM.name, opts, count, target, cfg, profile=raw, count_queries=True
    )
    result["server_cpu_s"] = server_cpu() - pg
    result["pyspy"] = collapse(raw)
    result["round_trips"] = per_unit(result.get("queries", {}), target)
    return result


async def profile_w2(cfg: Config, outdir: Path) -> dict[str, Any]:
    async with fresh_database(cfg.server_dsn, "prof_w2") as dsn:
        await SYSTEM.install(dsn)
        await publish_all(SYSTEM, dsn, batches(cfg.events, cfg.batch))
        count = counter(SYSTEM, cfg.events)
        return await _profiled_drain(dsn, cfg, outdir / "w2.pyspy.txt", count, cfg.events)


async def profile_w6(cfg: Config, outdir: Path, variant: str) -> dict[str, Any]:
    async with fresh_database(cfg.server_dsn, f"prof_w6_{variant}") as dsn:
        last = await backlog.seed(dsn, cfg, variant)
        after = ""
        if variant == "completed":
            after = last
            await publish_all(SYSTEM, dsn, batches(cfg.backlog_slice, cfg.batch))
        count = backlog.completed_after(after)
        raw = outdir / f"w6_{variant}.pyspy.txt"
        return await _profiled_drain(dsn, cfg, raw, count, cfg.backlog_slice)


async def profile_w3(cfg: Config, outdir: Path) -> dict[str, Any]:
    async with fresh_database(cfg.server_dsn, "prof_w3") as dsn:
        await SYSTEM.install(dsn)
        opts = WorkerOptions(dsn, "latency", cfg.concurrency, 1)
        worker = WorkerProcess(SYSTEM.name, opts, count_queries=True)
        try:
            await worker.start()
            await asyncio.sleep(1.0)
            base = instrument.snapshot()  # nothing in this process: kept for symmetry
            pub = await SYSTEM.open_publisher(dsn, 1)
            start = time.perf_counter()
            for i in range(cfg.latency_count):
                await asyncio.sleep(max(0.0, start + i * cfg.latency_gap - time.perf_counter()))
                await pub.one(stamped(i))
            await pub.close()
            await worker.wait_latencies(cfg.latency_count, 30.0)
        finally:
            await worker.stop()
    return {"events": len(worker.latencies), "queries": worker.stats, "base": base}


def per_unit(stats: dict[str, Any], units: int) -> dict[str, Any]:
    """Round trips per task (or batch, or event), and each statement's calls and time."""
    calls: dict[str, int] = stats.get("statements", {})
    spent: dict[str, float] = stats.get("statement_seconds", {})
    prepares = sum(stats.get("prepares", {}).values())
    rows = [
        {
            "statement": name,
            "calls": n,
            "per_unit": n / max(units, 1),
            "total_s": spent.get(name, 0.0),
            "avg_ms": 1000 * spent.get(name, 0.0) / n,
        }
        for name, n in sorted(calls.items(), key=lambda kv: -spent.get(kv[0], 0.0))
    ]
    return {
        "round_trips_total": sum(calls.values()) + prepares,
        "round_trips_per_unit": (sum(calls.values()) + prepares) / max(units, 1),
        "prepares": prepares,
        "by_statement": rows,
    }


def _write(outdir: Path, summary: dict[str, Any]) -> None:
    (outdir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")


async def profile(cfg: Config, outdir: Path) -> None:
    await asyncio.to_thread(outdir.mkdir, parents=True, exist_ok=True)
    w1 = await profile_w1(cfg, outdir)
    w2 = await profile_w2(cfg, outdir)
    w3 = await profile_w3(cfg, outdir)
    summary = {
        "w1": w1,
        "w1_round_trips_per_batch": per_unit(w1["plain"], cfg.events // cfg.batch),
        "w2": w2,
        "w3_round_trips_per_event": per_unit(w3.get("queries", {}), cfg.latency_count),
    }
    if "W6" in cfg.only:
        for variant in backlog.VARIANTS:
            summary[f"w6_{variant}"] = await profile_w6(cfg, outdir, variant)
    _write(outdir, summary)
    print(json.dumps(summary, indent=2, default=str))
