"""What one PostgreSQL holds: the server's CPU per event and per task, for docs/scaling.md.

    python -m benchmarks.capacity [--events 100000] [--seconds 10]

On a local server only (it reads the PostgreSQL processes' CPU time). For each of the three
hot paths it measures the work done, the wall time, the server's CPU seconds (every
``postgres`` process, sampled by pid every 50 ms, so a backend that exits during the run
keeps what it used until its last sample) and the client's CPU seconds:

- publish in batches of 500 (W1's path), one connection;
- single publishes, one event per call, from 16 concurrent callers (W5's path, group commit);
- a drain by one worker process at concurrency 20 (W2's path: convert, claim, complete).

From those, the server's CPU microseconds per event or task, and the ceiling they imply for
a server with C cores given to PostgreSQL alone: C x 1e6 / (microseconds per unit). The
clients' CPU shows how many worker or publisher cores that takes. The markdown report goes
to ``benchmarks/results/capacity.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks.config import Config
from benchmarks.db import fresh_database, resolve_server
from benchmarks.drain import timed_drain
from benchmarks.payload import batches, payload
from benchmarks.profiling import postgres_cpu
from benchmarks.systems.base import WorkerOptions
from benchmarks.systems.kanthorq_sys import SYSTEM
from benchmarks.workloads import counter, publish_all

SAMPLE_EVERY = 0.05
CORES = (2, 8, 32)


async def _wal_lsn(dsn: str) -> int:
    """The server's WAL position in bytes (cluster-wide: run on a quiet server)."""
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))
    finally:
        await conn.close()


class ServerCpu:
    """The CPU seconds that PostgreSQL's processes use between ``start`` and ``stop``."""

    def __init__(self) -> None:
        self._base: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self._last.update(postgres_cpu())
            await asyncio.sleep(SAMPLE_EVERY)

    def start(self) -> None:
        self._base = postgres_cpu()
        self._last = dict(self._base)
        self._task = asyncio.get_running_loop().create_task(self._sample())

    async def stop(self) -> float:
        assert self._task is not None
        self._last.update(postgres_cpu())
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        return sum(cpu - self._base.get(pid, 0.0) for pid, cpu in self._last.items())


@dataclass
class HotPath:
    name: str
    unit: str
    units: int
    seconds: float
    server_cpu_s: float
    client_cpu_s: float
    client: str
    wal_bytes: int = 0

    def per_unit_us(self, cpu: float) -> float:
        return 1e6 * cpu / self.units

    def row(self) -> dict[str, Any]:
        return {
            "path": self.name,
            "unit": self.unit,
            "units": self.units,
            "seconds": round(self.seconds, 3),
            "units_per_s": round(self.units / self.seconds),
            "server_cpu_s": round(self.server_cpu_s, 3),
            "server_us_per_unit": round(self.per_unit_us(self.server_cpu_s), 1),
            "client_cpu_s": round(self.client_cpu_s, 3),
            "client_us_per_unit": round(self.per_unit_us(self.client_cpu_s), 1),
            "client": self.client,
            "wal_bytes_per_unit": round(self.wal_bytes / self.units),
        }


async def _batches(cfg: Config) -> HotPath:
    async with fresh_database(cfg.server_dsn, "cap_batches") as dsn:
        await SYSTEM.install(dsn)
        pub = await SYSTEM.open_publisher(dsn, 1)
        try:
            prepared = [pub.prepare(b) for b in batches(cfg.events, cfg.batch)]
            await pub.many(pub.prepare(batches(cfg.batch, cfg.batch)[0]))  # warm up
            server = ServerCpu()
            wal = await _wal_lsn(dsn)
            server.start()
            cpu, wall = time.process_time(), time.perf_counter()
            for item in prepared:
                await pub.many(item)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            pg = await server.stop()
            wal = await _wal_lsn(dsn) - wal
        finally:
            await pub.close()
    name = "publish in batches of 500"
    return HotPath(name, "event", cfg.events, wall, pg, cpu, "publisher", wal)


async def _singles(cfg: Config) -> HotPath:
    async with fresh_database(cfg.server_dsn, "cap_singles") as dsn:
        await SYSTEM.install(dsn)
        pub = await SYSTEM.open_publisher(dsn, cfg.publishers)
        sent = 0

        async def loop(ident: int, until: float) -> None:
            nonlocal sent
            while time.perf_counter() < until:
                await pub.one(payload(ident * 1_000_000 + sent))
                sent += 1

        try:
            for _ in range(2):
                await asyncio.gather(*(pub.one(payload(i)) for i in range(cfg.publishers)))
            server = ServerCpu()
            wal = await _wal_lsn(dsn)
            server.start()
            cpu, wall = time.process_time(), time.perf_counter()
            until = wall + cfg.publish_seconds
            await asyncio.gather(*(loop(i, until) for i in range(cfg.publishers)))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            pg = await server.stop()
            wal = await _wal_lsn(dsn) - wal
        finally:
            await pub.close()
    name = f"single publishes, {cfg.publishers} concurrent callers"
    return HotPath(name, "event", sent, wall, pg, cpu, "publisher", wal)


async def _drain(cfg: Config) -> HotPath:
    async with fresh_database(cfg.server_dsn, "cap_drain") as dsn:
        await SYSTEM.install(dsn)
        await publish_all(SYSTEM, dsn, batches(cfg.events, cfg.batch))
        opts = WorkerOptions(dsn, "drain", cfg.concurrency, 1)
        server = ServerCpu()
        wal = await _wal_lsn(dsn)
        server.start()
        result = await timed_drain(SYSTEM.name, opts, counter(SYSTEM, cfg.events), cfg.events, cfg)
        pg = await server.stop()
        wal = await _wal_lsn(dsn) - wal
    seconds = float(result["seconds"])
    cpu = float(result["worker_cpu_pct"]) * seconds / 100
    # the server's figure spans the worker's start and stop too: a little more than the drain
    name = f"drain by one worker process, concurrency {cfg.concurrency}"
    return HotPath(name, "task", cfg.events, seconds, pg, cpu, "worker", wal)


def report(paths: list[HotPath], meta: str) -> str:
    lines = [
        "# What one PostgreSQL holds: server CPU per event and per task",
        "",
        meta,
        "",
        "| path | units | units/s here | server CPU µs per unit | client CPU µs per unit "
        "| WAL bytes per unit |"
        + "".join(f" server-bound ceiling, {c} cores (units/s) |" for c in CORES),
        "| --- | --- | --- | --- | --- | --- |" + " --- |" * len(CORES),
    ]
    for p in paths:
        r = p.row()
        ceilings = "".join(f" {c * 1e6 / max(r['server_us_per_unit'], 0.1):,.0f} |" for c in CORES)
        lines.append(
            f"| {p.name} | {p.units:,} {p.unit}s | {r['units_per_s']:,} | "
            f"{r['server_us_per_unit']} | {r['client_us_per_unit']} ({p.client}) | "
            f"{r['wal_bytes_per_unit']:,} |{ceilings}"
        )
    lines += [
        "",
        "A ceiling is the rate at which the server's processes would use C cores in full at "
        "the CPU per unit measured here; it ignores the disk (WAL flushes), locks and the "
        "clients. WAL bytes are the server's whole WAL over the run (run it on a quiet server). "
        "See docs/scaling.md for the reasoning around it.",
        "",
    ]
    return "\n".join(lines)


async def run(argv: list[str] | None = None) -> tuple[str, str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="a local PostgreSQL server (default: as make bench)")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", default="benchmarks/results/capacity.md")
    args = parser.parse_args(argv)
    cfg = Config(events=args.events, publish_seconds=args.seconds)
    cfg.server_dsn, _ = await resolve_server(args.dsn)
    paths = [await _batches(cfg), await _singles(cfg), await _drain(cfg)]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    meta = (
        f"`python -m benchmarks.capacity --events {args.events} --seconds {args.seconds:g}`, "
        f"{os.cpu_count()} CPUs, load average at the end: {load}"
    )
    return report(paths, meta), args.out


def main(argv: list[str] | None = None) -> None:
    text, out = asyncio.run(run(argv))
    Path(out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
