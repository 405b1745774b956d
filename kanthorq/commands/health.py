"""``kanthorq health``: is the database there, migrated, and are the consumers served?

For a Kubernetes exec probe: exit 0 when every check passes, 1 when one fails. It reads
the database only (the running workers' own view is ``/readyz`` of ``kanthorq run
--metrics-port``): the database answers within ``--timeout``, kanthorq's migrations are
applied, and each ``--consumer`` exists and has no running task past its visibility
timeout, which a running worker would have rescued at its next poll.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from kanthorq.app import App
from kanthorq.commands.common import FMT, emit, json_option
from kanthorq.database import resolve_dsn
from kanthorq.errors import ConfigError, SchemaNotReady, UnknownConsumer
from kanthorq.health import Check, Report
from kanthorq.ids import validate_name
from kanthorq.sqlfiles import load

EPILOG = """\
examples:
  kanthorq health --dsn postgresql://user@db.internal/orders
  kanthorq health --consumer email --consumer refund --json

Exit codes: 0 healthy, 1 a check failed, 2 bad usage. A Kubernetes exec probe:
  livenessProbe: {exec: {command: [kanthorq, health, --consumer, email]}}
(with KANTHORQ_DSN in the environment). The running workers' own readiness is /readyz of
`kanthorq run --metrics-port`.
"""


def register(commands: Any, common: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "health",
        help="check the database, its schema and consumers; exit 0 or 1 (for probes)",
        description="Check that the database answers, that kanthorq's schema is migrated, and\n"
        "that each --consumer exists with no running task past its visibility timeout.",
        epilog=EPILOG,
        formatter_class=FMT,
        parents=common,
    )
    parser.add_argument(
        "--consumer",
        action="append",
        default=[],
        metavar="NAME",
        help="check this consumer too (repeat for several)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long the database may take to answer (default: %(default)s)",
    )
    json_option(parser)
    parser.set_defaults(handler=cmd_health, default_log_level="ERROR")


def cmd_health(args: argparse.Namespace) -> int:
    for name in args.consumer:
        validate_name(name, "consumer")
    if not 0 < args.timeout <= 3600:
        raise ConfigError(f"--timeout must be from 0 to 3600 seconds, got {args.timeout:g}")
    dsn = resolve_dsn(args.dsn)
    if dsn is None:
        raise ConfigError("kanthorq health needs --dsn or $KANTHORQ_DSN (the database to check)")
    report = asyncio.run(probe(dsn, args.consumer, args.timeout, args.statement_cache_size))
    emit(args, report.as_dict(), report.text())
    return 0 if report.ok else 1


async def probe(
    dsn: str, consumers: list[str], timeout: float, cache_size: int | None = None
) -> Report:
    app = App(dsn, migrate=False, statement_cache_size=cache_size)
    started = time.monotonic()
    try:
        await asyncio.wait_for(app.open(), timeout)
    except SchemaNotReady as exc:
        return Report([Check("database", True, "answered"), Check("schema", False, str(exc))])
    except TimeoutError:
        return Report([Check("database", False, f"no answer within {timeout:g}s")])
    except Exception as exc:
        return Report([Check("database", False, f"{type(exc).__name__}: {exc}")])
    try:
        return Report(await _checks(app, consumers, timeout, started))
    finally:
        await app.close()


async def _checks(app: App, consumers: list[str], timeout: float, started: float) -> list[Check]:
    try:
        await asyncio.wait_for(app.pool.fetchval(load("health_ping")), timeout)
    except Exception as exc:
        return [Check("database", False, f"{type(exc).__name__}: {exc}")]
    ms = (time.monotonic() - started) * 1000
    checks = [
        Check("database", True, f"answered (connected and queried in {ms:.0f} ms)"),
        Check("schema", True, "every migration is applied"),
    ]
    for name in consumers:
        checks.append(await _consumer(app, name))
    return checks


async def _consumer(app: App, name: str) -> Check:
    label = f"consumer {name}"
    try:
        info = await app.admin.consumer(name)
    except UnknownConsumer:
        return Check(label, False, "no such consumer")
    overview = await app.admin.show(info.stream_name)
    found = next((c for c in overview.consumers if c.name == name), None)
    if found is None or found.note:
        return Check(label, False, "cannot be read" if found is None else str(found.note))
    late = found.past_visibility_timeout or 0
    running = found.tasks.get("running", 0)
    if late:
        tasks = (
            "1 running task is past its" if late == 1 else f"{late} running tasks are past their"
        )
        return Check(
            label,
            False,
            f"{tasks} visibility timeout: no worker rescued them (are its workers running?)",
        )
    return Check(label, True, f"lag {found.lag}, {running} running, none past its timeout")
