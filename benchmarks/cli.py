"""``python -m benchmarks``: parse the options, run the rounds, print and save the report."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import systems
from benchmarks.config import WORKLOADS, Config
from benchmarks.db import drop_orphans, resolve_server

logger = logging.getLogger("benchmarks")
RESULTS = Path("benchmarks/results")


def _names(text: str, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown {what} {unknown}; choose from {allowed}")
    return names


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument(
        "--dsn",
        help="server DSN (default: $KANTHORQ_BENCH_DSN, the local server "
        "on 127.0.0.1:5432 if it answers, else the embedded server)",
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--only",
        type=lambda t: _names(t, WORKLOADS, "workload"),
        default=WORKLOADS,
        help="workloads, e.g. W1,W2",
    )
    p.add_argument(
        "--systems",
        type=lambda t: _names(t, systems.ALL, "system"),
        default=systems.ALL,
        help="e.g. kanthorq,raw",
    )
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    p.add_argument("--events", type=int, help="W1/W2/W4 events (default 20000)")
    p.add_argument("--backlog", type=int, help="W6 backlog rows (default 1000000)")
    p.add_argument("--backlog-slice", type=int, help="W6 tasks timed (default 20000)")
    p.add_argument(
        "--backlog-rounds",
        type=int,
        default=1,
        help="run W6 in this many of the rounds (default 1: seeding is slow)",
    )
    p.add_argument("--publish-seconds", type=float, help="W5 duration (default 10)")
    p.add_argument(
        "--out",
        type=Path,
        help="JSON report (default benchmarks/results/"
        "latest.json, quick.json with --quick); the Markdown goes beside it",
    )
    p.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="instead of the rounds: profile kanthorq's W1, W2 and W3 into DIR",
    )
    return p


def config(args: argparse.Namespace) -> Config:
    cfg = Config(rounds=args.rounds, only=args.only, systems=args.systems)
    if args.quick:
        cfg.make_quick()
    for name in ("events", "backlog", "backlog_slice", "publish_seconds"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    cfg.backlog_rounds = args.backlog_rounds
    cfg.out = args.out or RESULTS / ("quick.json" if args.quick else "latest.json")
    cfg.markdown = cfg.out.with_suffix(".md")
    return cfg


async def run(args: argparse.Namespace) -> int:
    from benchmarks import meta, report, runner

    cfg = config(args)
    cfg.server_dsn, source = await resolve_server(args.dsn)
    for name in await drop_orphans(cfg.server_dsn):
        logger.warning("dropped %s, left by a benchmark run that is gone", name)
    if args.profile is not None:
        from benchmarks.profiling import profile

        await profile(cfg, args.profile)
        return 0
    info = await meta.collect(cfg, source)
    load = os.getloadavg()
    started = time.perf_counter()
    results, failures = await runner.run_rounds(cfg)
    info["wall_seconds"] = time.perf_counter() - started
    info["load"] = f"{load[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    info["finished"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    info["failures"] = failures
    print(report.write(results, info, cfg.out, cfg.markdown))
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", stream=sys.stderr)
    logger.setLevel(logging.INFO)  # the progress lines; the systems' own logs stay quiet
    return asyncio.run(run(args))
