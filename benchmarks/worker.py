"""``python -m benchmarks.worker SYSTEM``: one worker process of one system.

It prints ``READY`` when the system's worker is about to start (connections open, one-time
DDL done), ``LAT <ms>`` for each handled body in latency mode, and ``STATS <json>`` (the
round trips it made, when counted) before it exits. SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

from benchmarks import systems
from benchmarks.payload import latency_ms
from benchmarks.systems.base import Body, WorkerOptions


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _on_body(body: Body) -> None:
    _say(f"LAT {latency_ms(body):.3f}")


async def serve(system: str, opts: WorkerOptions, count: bool) -> None:
    if count:
        from benchmarks import instrument

        instrument.install()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await systems.load(system).serve(opts, lambda: _say("READY"), stop, _on_body)
    if count:
        from benchmarks import instrument

        _say("STATS " + json.dumps(instrument.snapshot()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.worker")
    parser.add_argument("system", choices=systems.ALL)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--mode", choices=("drain", "latency"), default="drain")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--consumers", type=int, default=1)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--count-queries", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    opts = WorkerOptions(args.dsn, args.mode, args.concurrency, args.consumers, args.streams)
    asyncio.run(serve(args.system, opts, args.count_queries))


if __name__ == "__main__":
    main()
