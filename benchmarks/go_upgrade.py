"""How long kanthorq locks a KanthorQ for Go stream when its first consumer starts on it.

    python -m benchmarks.go_upgrade --events 1000000

A stream table that the Go library created has no ``txid`` column and no ``(txid, id)`` index.
The first kanthorq consumer of the stream adds both (kanthorq/tables.py). This seeds a Go
stream of ``--events`` events in a fresh database (Go's DDL, tests/interop/gosql.py), then
completes it the way a worker does, twice in the same command: once while nothing else
runs, and once while a Go-style publisher INSERTs into the stream one event at a time. For
comparison it also runs what kanthorq 0.1 did (an ADD COLUMN with a volatile default, which
rewrites the table, and a plain CREATE INDEX), on a copy seeded the same way.

Reported: how long the ACCESS EXCLUSIVE lock was held (the ALTER's transaction, timed by
kanthorq, and a sampler of pg_locks every 2 ms), the whole completion's time, whether the
table was rewritten (its relfilenode), and what the publisher saw: inserts made, the median,
p99 and longest insert during the completion.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import asyncpg

from benchmarks.db import fresh_database, resolve_server
from kanthorq import migrate, tables
from tests.interop import gosql

LEGACY_DDL = """
ALTER TABLE {table} ADD COLUMN IF NOT EXISTS txid XID8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX IF NOT EXISTS {index} ON {table} (txid, id);
"""


@dataclass
class Run:
    name: str
    publisher: bool
    completion_s: float = 0.0
    alter_ms: float | None = None  # the ALTER's transaction, as kanthorq timed it
    exclusive_seen_ms: float = 0.0  # ACCESS EXCLUSIVE seen granted by the sampler
    rewritten: bool = False
    inserts: int = 0
    insert_p50_ms: float | None = None
    insert_p99_ms: float | None = None
    insert_max_ms: float | None = None
    notes: list[str] = field(default_factory=list)


class AlterTimes(logging.Handler):
    """Collects the "(N ms)" that kanthorq.tables logs for each ALTER it made."""

    def __init__(self) -> None:
        super().__init__()
        self.ms: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        found = re.search(r"\((\d+) ms\)", record.getMessage())
        if found:
            self.ms.append(float(found.group(1)))


async def seed(dsn: str, events: int) -> gosql.GoStream:
    conn = await asyncpg.connect(dsn)
    try:
        await gosql.migrate(conn)
        stream = await gosql.register_stream(conn, "orders")
        for start in range(0, events, 100_000):  # a transaction per 100,000 events
            await conn.execute(
                f"INSERT INTO {stream.table} (id, subject, body, metadata, created_at) "
                "SELECT 'event_01j' || lpad(g::TEXT, 23, '0'), 'order.created', "
                "'{\"n\": 1}', '{}', 1700000000000 + g "
                "FROM generate_series($1::BIGINT, $2::BIGINT) AS g",
                start + 1,
                min(start + 100_000, events),
            )
        await conn.execute(f"VACUUM ANALYZE {stream.table}")
        return stream
    finally:
        await conn.close()


async def sample_locks(dsn: str, table: str, stop: asyncio.Event) -> float:
    """Milliseconds during which an ACCESS EXCLUSIVE lock on ``table`` was seen granted."""
    conn = await asyncpg.connect(dsn)
    seen = 0.0
    try:
        query = (
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE relation = to_regclass($1) "
            "AND mode = 'AccessExclusiveLock' AND granted)"
        )
        last = time.perf_counter()
        while not stop.is_set():
            held = await conn.fetchval(query, table)
            now = time.perf_counter()
            if held:
                seen += (now - last) * 1000
            last = now
            await asyncio.sleep(0.002)
    finally:
        await conn.close()
    return seen


async def publish(dsn: str, stream: gosql.GoStream, stop: asyncio.Event) -> list[float]:
    """Go-style single INSERTs until ``stop``: the latency of each, in ms."""
    conn = await asyncpg.connect(dsn)
    latencies: list[float] = []
    try:
        while not stop.is_set():
            started = time.perf_counter()
            await gosql.publish(conn, stream, "order.created", b'{"n": 2}')
            latencies.append((time.perf_counter() - started) * 1000)
    finally:
        await conn.close()
    return latencies


async def complete_like_kanthorq(dsn: str, stream: gosql.GoStream) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate.up(conn)  # what App.open does first
        await tables.complete(conn, tables.stream_spec(stream.id))
    finally:
        await conn.close()


async def complete_like_0_1(dsn: str, stream: gosql.GoStream) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        index = f'"kanthorq_{stream.id}_txid"'
        async with conn.transaction():
            await conn.execute(LEGACY_DDL.format(table=stream.table, index=index))
    finally:
        await conn.close()


async def measure(server: str, events: int, name: str, with_publisher: bool) -> Run:
    run = Run(name, with_publisher)
    async with fresh_database(server, f"goup_{name}") as dsn:
        stream = await seed(dsn, events)
        conn = await asyncpg.connect(dsn)
        before = await conn.fetchval("SELECT pg_relation_filenode($1)", stream.table)
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_locks(dsn, stream.table, stop))
        publisher = asyncio.create_task(publish(dsn, stream, stop)) if with_publisher else None
        await asyncio.sleep(0.5)  # the publisher is warm
        times = AlterTimes()
        logging.getLogger("kanthorq.tables").addHandler(times)
        logging.getLogger("kanthorq.tables").setLevel(logging.INFO)
        started = time.perf_counter()
        if name == "kanthorq":
            await complete_like_kanthorq(dsn, stream)
        else:
            await complete_like_0_1(dsn, stream)
        run.completion_s = time.perf_counter() - started
        logging.getLogger("kanthorq.tables").removeHandler(times)
        await asyncio.sleep(0.2)
        stop.set()
        run.exclusive_seen_ms = round(await sampler, 1)
        if publisher is not None:
            latencies = sorted(await publisher)
            run.inserts = len(latencies)
            run.insert_p50_ms = round(statistics.median(latencies), 2)
            run.insert_p99_ms = round(latencies[int(len(latencies) * 0.99)], 2)
            run.insert_max_ms = round(latencies[-1], 1)
        run.alter_ms = max(times.ms) if times.ms else None
        after = await conn.fetchval("SELECT pg_relation_filenode($1)", stream.table)
        run.rewritten = before != after
        valid = await conn.fetchval(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)",
            f'"kanthorq_{stream.id}_txid"',
        )
        if not valid:
            run.notes.append("the (txid, id) index is not valid")
        await conn.close()
    return run


def render(runs: list[Run], events: int, load: str) -> str:
    lines = [
        f"# A KanthorQ for Go stream of {events:,} events, completed for kanthorq",
        "",
        f"load average at the start: {load}",
        "",
        "| how | publisher | ALTER txn (ms) | ACCESS EXCLUSIVE seen (ms) | whole (s) | "
        "rewritten | inserts | insert p50 / p99 / max (ms) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        inserts = (
            f"{r.insert_p50_ms} / {r.insert_p99_ms} / {r.insert_max_ms}" if r.publisher else "-"
        )
        lines.append(
            f"| {r.name} | {'yes' if r.publisher else 'no'} | {r.alter_ms or '-'} | "
            f"{r.exclusive_seen_ms} | {r.completion_s:.2f} | {'yes' if r.rewritten else 'no'} | "
            f"{r.inserts or '-'} | {inserts} |"
        )
    return "\n".join(lines) + "\n"


async def measure_all(server: str | None, events: int) -> list[Run]:
    dsn, _ = await resolve_server(server)
    runs = []
    for name, with_publisher in (
        ("kanthorq", False),
        ("kanthorq", True),
        ("kanthorq 0.1", False),
        ("kanthorq 0.1", True),
    ):
        runs.append(await measure(dsn, events, name, with_publisher))
        print(json.dumps(asdict(runs[-1])), flush=True)
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="a PostgreSQL server (default: as make bench)")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--out", default="benchmarks/results/go_upgrade.md")
    args = parser.parse_args(argv)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    runs = asyncio.run(measure_all(args.dsn, args.events))
    report = render(runs, args.events, load)
    print(report)
    Path(args.out).write_text(report)


if __name__ == "__main__":
    main()
