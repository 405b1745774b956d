"""Item 13, opt-in (``-m soak``): a long run with workers killed at random.

Knobs (environment): KANTHORQ_SOAK_SECONDS (1800), KANTHORQ_SOAK_EVENTS (1,000,000),
KANTHORQ_SOAK_WORKERS (4), KANTHORQ_SOAK_KILL_EVERY (60 s). Events are published at an even
rate over the first 90% of the run; every KILL_EVERY seconds one worker (never the first,
whose memory is watched, nor with tracing the second) is killed with SIGKILL and replaced.
Then the backlog drains, and the report is printed: lost, duplicates, RSS at the start
(after warm-up) and at the end (of a kept worker that does not trace), dead tuples, claim
latency. It runs on a PostgreSQL server of its own, started with PostgreSQL's default
settings, so its load and its vacuuming are its own.

The memory series: every 5 s a row of ``rss.csv`` in KANTHORQ_SOAK_OUT (default: the test's
temporary folder), with the report beside it. With KANTHORQ_SOAK_TRACEMALLOC=1 the watched
worker also traces its allocations (tests/reliability/memwatch.py): the rows then carry its
traced bytes and glibc's bytes in use and free, and the RSS of a second worker that is never
killed and does not trace (a control: tracing itself costs memory); ``tracemalloc/`` gets a
snapshot after the warm-up and every KANTHORQ_SOAK_SNAPSHOT_EVERY (600) s. Plot and compare
them with ``python -m benchmarks.soak_memory``.

    KANTHORQ_SOAK_SECONDS=180 KANTHORQ_SOAK_EVENTS=50000 make test-reliability PYTEST_ARGS="-m soak"
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import asyncpg
import pytest

import kanthorq
from tests.conftest import stream_table, task_table, wait_until
from tests.reliability.conftest import Worker, Workers, audit, bodies, create_ledger
from tests.reliability.private_pg import PrivateServer

SECONDS = float(os.environ.get("KANTHORQ_SOAK_SECONDS", "1800"))
EVENTS = int(os.environ.get("KANTHORQ_SOAK_EVENTS", "1000000"))
WORKERS = int(os.environ.get("KANTHORQ_SOAK_WORKERS", "4"))
KILL_EVERY = float(os.environ.get("KANTHORQ_SOAK_KILL_EVERY", "60"))
DRAIN = float(os.environ.get("KANTHORQ_SOAK_DRAIN", "900"))  # seconds for the backlog
VT = 15.0  # a killed worker's tasks come back after this (real time: the soak is real time)
WARM_UP = min(60.0, SECONDS / 5)
TRACE = os.environ.get("KANTHORQ_SOAK_TRACEMALLOC", "0") == "1"
SNAPSHOT_EVERY = float(os.environ.get("KANTHORQ_SOAK_SNAPSHOT_EVERY", "600"))
OUT = os.environ.get("KANTHORQ_SOAK_OUT")
# the CSV's columns after seconds: the sampler's own, then the witness's (memwatch.now())
COLUMNS = ["rss_kb", "control_rss_kb", "dead_tuples", "live_tuples"]
KEPT = 2 if TRACE else 1  # workers never killed: the witness, and with tracing a control
WITNESS_COLUMNS = [
    "traced",
    "tracemalloc_overhead",
    "malloc_inuse",
    "malloc_free",
    "pymalloc_blocks",
]
# handlers take 20 ms (I/O, say), so a killed worker has tasks in flight
KNOBS = {"concurrency": 50, "vt": VT, "poll": 1.0, "started": 0, "backoff": 0.5, "sleep_ms": 20}


@dataclass
class Samples:
    # RSS of a kept worker that does not trace (with tracing, the control): tracing costs
    # memory of its own, so the flat-RSS criterion is checked on a worker without it
    rss_kb: list[tuple[float, int]] = field(default_factory=list)
    dead: list[tuple[float, int, int]] = field(default_factory=list)  # (t, dead, live)
    kills: int = 0


@dataclass
class Report:
    seconds: float
    events: int
    published: int
    completed: int
    unfinished: int  # not completed when the drain ended (a backlog the box could not clear)
    lost: int  # no task, or a task that ended other than completed
    ledger_duplicates: int
    extra_claims: int
    kills: int
    rss_start_kb: int
    rss_end_kb: int
    rss_max_after_warm_up_kb: int
    dead_tuples_max: int
    dead_tuples_end: int
    live_tuples_end: int
    claim_latency_p50_ms: float
    claim_latency_p99_ms: float


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


async def publish_evenly(app: kanthorq.App, until: float) -> int:
    """Publish EVENTS events at an even rate until ``until`` (monotonic)."""
    start = time.monotonic()
    rate = EVENTS / max(until - start, 1.0)
    sent = 0
    while sent < EVENTS:
        due = min(EVENTS, int((time.monotonic() - start) * rate) + 1)
        if due > sent:
            batch = bodies(due - sent, sent)
            for at in range(0, len(batch), 1000):
                await app.publish_many([("job.soak", b) for b in batch[at : at + 1000]])
            sent = due
        await asyncio.sleep(0.05)
    return sent


async def kill_at_random(
    workers: Workers, pool: list[Worker], dsn: str, until: float, samples: Samples
) -> None:
    rng = random.Random()
    while time.monotonic() + KILL_EVERY < until:
        await asyncio.sleep(KILL_EVERY)
        index = rng.randrange(KEPT, len(pool))
        pool[index].kill()
        samples.kills += 1
        pool[index] = workers.spawn(dsn, log_level="WARNING", **KNOBS)
        for worker in pool:
            assert worker.alive(), workers.logs()


def witness_memory(folder: Path | None) -> dict[str, object]:
    """What the witness last wrote about its own memory (empty when it does not trace)."""
    if folder is None:
        return {}
    try:
        data: dict[str, object] = json.loads((folder / "now.json").read_text())
    except (OSError, ValueError):
        return {}
    return data


async def sample(
    dsn: str, kept: list[Worker], table: str, samples: Samples, stop: asyncio.Event, out: Path
) -> None:
    """Every 5 s: the witness's RSS and the task table's dead tuples (its own connection),
    appended to ``out/rss.csv`` as they come, so a run cut short keeps its series."""
    conn = await asyncpg.connect(dsn)
    traced = out / "tracemalloc" if TRACE else None
    try:
        with (out / "rss.csv").open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["seconds", *COLUMNS, *WITNESS_COLUMNS])
            start = time.monotonic()
            while not stop.is_set():
                now = time.monotonic() - start
                witness = rss_kb(kept[0].pid)
                control = rss_kb(kept[1].pid) if len(kept) > 1 else ""
                samples.rss_kb.append((now, control or witness))  # a worker that does not trace
                row = await conn.fetchrow(
                    "SELECT n_dead_tup, n_live_tup FROM pg_stat_user_tables WHERE relname = $1",
                    table.strip('"'),
                )
                dead = (now, row["n_dead_tup"], row["n_live_tup"]) if row else (now, "", "")
                if row is not None:
                    samples.dead.append((now, row["n_dead_tup"], row["n_live_tup"]))
                memory = witness_memory(traced)
                writer.writerow(
                    [round(now, 1), witness, control, *dead[1:]]
                    + [memory.get(name, "") for name in WITNESS_COLUMNS]
                )
                file.flush()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 5)
    finally:
        await conn.close()


async def latency(db: asyncpg.Connection, table: str, events: str) -> tuple[float, float]:
    row = await db.fetchrow(
        f"SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP "
        f"(ORDER BY t.attempted_at - e.created_at) AS p FROM {table} t "
        f"JOIN {events} e ON e.id = t.event_id WHERE t.attempt_count = 1"
    )
    p50, p99 = row["p"]
    return float(p50), float(p99)


@pytest.mark.soak
@pytest.mark.timeout(SECONDS + DRAIN + 300)
async def test_soak(
    private_dsn: tuple[str, PrivateServer],
    workers: Workers,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    dsn = private_dsn[0]  # a server of its own, with PostgreSQL's defaults (autovacuum on)
    db = await asyncpg.connect(dsn)
    try:
        await run_soak(dsn, db, workers, capsys, tmp_path)
    finally:
        await db.close()


async def run_soak(
    dsn: str,
    db: asyncpg.Connection,
    workers: Workers,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    publisher = kanthorq.App(dsn, pool_size=4)
    samples = Samples()
    out = Path(OUT) if OUT else tmp_path / "soak"
    out.mkdir(parents=True, exist_ok=True)
    watch: dict[str, object] = {}
    if TRACE:
        watch = {
            "tracemalloc_dir": out / "tracemalloc",
            "tracemalloc_first": WARM_UP,
            "tracemalloc_every": SNAPSHOT_EVERY,
        }
    async with publisher:
        await create_ledger(db)
        await publisher.publish("job.soak", {"seq": -1})  # the stream exists before the workers
        witness = workers.spawn(dsn, log_level="WARNING", **KNOBS, **watch)
        pool = [witness] + [
            workers.spawn(dsn, log_level="WARNING", **KNOBS) for _ in range(WORKERS - 1)
        ]
        await wait_until(lambda: _registered(db), timeout=30)
        table = await task_table(db, "jobs")
        events_table = await stream_table(db)
        began = time.monotonic()
        stop_sampling = asyncio.Event()
        sampler = asyncio.create_task(sample(dsn, pool[:KEPT], table, samples, stop_sampling, out))
        try:
            published, _ = await asyncio.gather(
                publish_evenly(publisher, began + SECONDS * 0.9),
                kill_at_random(workers, pool, dsn, began + SECONDS, samples),
            )
            published += 1

            async def drained() -> bool:
                if not witness.alive():
                    return True  # checked below, after the report
                done = await db.fetchval(f"SELECT count(*) FROM {table} WHERE state = 101")
                return done == published

            with contextlib.suppress(AssertionError):  # the report says what was left
                await wait_until(drained, timeout=DRAIN, interval=1.0)
        finally:
            stop_sampling.set()
            await sampler
        elapsed = time.monotonic() - began

    result = await audit(db, "jobs")
    extra = await db.fetchval(f"SELECT coalesce(sum(attempt_count - 1), 0) FROM {table}")
    p50, p99 = await latency(db, table, events_table)
    final = await db.fetchrow(
        "SELECT n_dead_tup, n_live_tup FROM pg_stat_user_tables WHERE relname = $1",
        table.strip('"'),
    )
    warm = [kb for t, kb in samples.rss_kb if t >= WARM_UP] or [samples.rss_kb[-1][1]]
    report = Report(
        seconds=round(elapsed, 1),
        events=EVENTS,
        published=published,
        completed=result.completed,
        unfinished=published - result.completed,
        lost=len(result.unconverted)
        + sum(n for state, n in result.states.items() if state < 0)
        + len(result.without_ledger),
        ledger_duplicates=len(result.ledger_duplicates),
        extra_claims=int(extra),
        kills=samples.kills,
        rss_start_kb=warm[0],
        rss_end_kb=samples.rss_kb[-1][1],
        rss_max_after_warm_up_kb=max(warm),
        dead_tuples_max=max((d for _, d, _ in samples.dead), default=0),
        dead_tuples_end=final["n_dead_tup"],
        live_tuples_end=final["n_live_tup"],
        claim_latency_p50_ms=p50,
        claim_latency_p99_ms=p99,
    )
    (out / "soak-report.json").write_text(json.dumps(asdict(report), indent=2))
    with capsys.disabled():
        print("\nsoak report:", json.dumps(asdict(report), indent=2), "\nseries:", out)

    assert witness.alive(), workers.logs()
    assert report.lost == 0
    assert report.unfinished == 0, "the backlog did not drain"
    assert report.ledger_duplicates == 0
    assert report.kills >= max(int(SECONDS // KILL_EVERY) - 1, 1)
    assert report.rss_end_kb <= report.rss_start_kb * 1.10, report
    # bounded: autovacuum keeps up, dead tuples do not pile up with every update
    assert report.dead_tuples_max <= 0.3 * published + 50_000, report


async def _registered(db: asyncpg.Connection) -> bool:
    return bool(
        await db.fetchval("SELECT count(*) FROM kanthorq_consumer_registry WHERE name = 'jobs'")
    )
