"""The command line: ``kanthorq run``, ``kanthorq migrate up|down|status``, ``kanthorq pub``.

Exit codes: 0 success, 2 bad usage (arguments, subjects, names, metadata, the APP path),
1 a runtime failure (the database, the network, the app's own code). Errors are one line on
stderr, ``kanthorq: error: ...``, with the traceback only under ``--debug``. Only the CLI
configures logging; the library never does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from importlib import metadata as importlib_metadata
from typing import Any

import asyncpg

from kanthorq import commands as admin_commands
from kanthorq import embedded, logconfig, migrate, supervisor
from kanthorq.app import App
from kanthorq.commands import timeparse
from kanthorq.commands.common import non_negative_seconds
from kanthorq.database import (
    connect,
    listen_target,
    parse_dsn,
    resolve_dsn,
    resolve_statement_cache_size,
)
from kanthorq.errors import (
    ConfigError,
    InvalidName,
    InvalidPayload,
    InvalidSubject,
    KanthorQError,
    UnknownConsumer,
    UnknownStream,
)
from kanthorq.ids import validate_name
from kanthorq.linereader import line_batches
from kanthorq.loader import AppImportFailed, load_app
from kanthorq.payloads import encode_metadata
from kanthorq.schedule import schedule_ms
from kanthorq.sqlfiles import migrations
from kanthorq.subjects import validate_subject

PROG = "kanthorq"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
USAGE_ERRORS = (
    ConfigError,
    InvalidSubject,
    InvalidName,
    InvalidPayload,
    UnknownStream,
    UnknownConsumer,
)

logger = logging.getLogger("kanthorq.cli")

MAIN_EPILOG = """\
examples:
  kanthorq run app:app                     run every consumer of app = kanthorq.App() in app.py
  kanthorq pub order.cancelled '{"order_id": 42}'
  kanthorq migrate up --dsn postgresql://user@localhost/db

The database: --dsn, else $KANTHORQ_DSN, else the embedded PostgreSQL under ./.kanthorq
(or $KANTHORQ_HOME; needs pip install 'kanthorq[embedded]'). Behind PgBouncer in
transaction pooling mode: --statement-cache-size 0 (or KANTHORQ_STATEMENT_CACHE_SIZE=0),
and for `run`, --listen-dsn (or $KANTHORQ_LISTEN_DSN) with a direct connection for LISTEN.
Exit codes: 0 success, 1 runtime failure, 2 bad usage.
"""
RUN_EPILOG = """\
examples:
  kanthorq run app:app
  kanthorq run myproject.workers:app --consumer email --consumer refund
  kanthorq run app:app --dsn postgresql://user@db.internal/orders --log-level DEBUG
  kanthorq run app:app --dsn postgresql://user@pgbouncer:6432/orders \
      --statement-cache-size 0 --listen-dsn postgresql://user@db.internal/orders
  kanthorq run app:app --metrics-port 9464 --log-format json

--metrics-port serves /metrics (Prometheus; needs pip install 'kanthorq[metrics]'),
/healthz (the process answers) and /readyz (the database answers, every worker loop steps,
the listener is connected; 503 with the reason when not). When the app's module configures
logging itself, kanthorq leaves it alone (unless --log-config or --log-format is given).

The current directory (or --app-dir) is put first on sys.path, so app:app finds ./app.py.
SIGINT or SIGTERM stops claiming tasks, gives running handlers the app's shutdown_timeout
to finish, hands the rest back for retry at once, and exits 0. A second signal exits at
once (code 128 + the signal number); its running tasks return after their visibility
timeout.
"""
MIGRATE_EPILOG = """\
examples:
  kanthorq migrate status
  kanthorq migrate up
  kanthorq migrate down --yes          revert the last migration
  kanthorq migrate down --all --yes    revert every migration

Apps apply the migrations when they open (App(migrate=False) turns that off); these commands
run them by hand. Reverting the first migration drops every stream and consumer table, with
their events and tasks, so 'down' needs --yes.
"""
PUB_EPILOG = """\
examples:
  kanthorq pub order.cancelled '{"order_id": 42}'
  kanthorq pub order.cancelled --metadata '{"source": "cli"}' < body.json
  kanthorq pub order.cancelled --lines --stream orders < events.jsonl
  kanthorq pub invoice.remind '{"id": 7}' --delay 3600
  kanthorq pub invoice.remind '{"id": 7}' --at 2026-12-01T09:00:00Z

BODY is stored as its UTF-8 bytes, as is stdin's content; the body is never re-encoded.
With --lines, each non-empty stdin line is one event (its line ending removed), published
in batches of up to --batch-size as lines arrive. The event ids are printed one per line.
"""


# ---- run ----------------------------------------------------------------------------


def _workers(text: str) -> int:
    try:
        return supervisor.worker_count(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--workers takes a number of processes from 1, or auto; got {text!r}"
        ) from None


def cmd_run(args: argparse.Namespace) -> int:
    if args.listen_dsn is not None:
        listen_target(args.listen_dsn)  # checked before the app is imported
    if args.metrics_port is not None:
        from kanthorq import endpoints

        endpoints.parse_address(args.metrics_port)
        import kanthorq.metrics  # noqa: F401  (a missing extra is said before the app starts)
    app = load_app(args.app, args.app_dir)  # its module may configure logging: see to it after
    logconfig.from_args(args, respect_app=True)
    if args.workers > 1:  # the children are this command with --workers 1
        return asyncio.run(supervisor.supervise(args.argv, args.workers, app.shutdown_timeout))
    supervisor.follow_supervisor()
    if args.dsn is not None:
        app.dsn = args.dsn
    if args.listen_dsn is not None:
        app.listen_dsn = args.listen_dsn
    if args.statement_cache_size is not None:
        app.statement_cache_size = args.statement_cache_size
    return asyncio.run(serve(app, args.consumer, args.metrics_port))


def _monitoring(app: App, address: str | None) -> contextlib.AbstractAsyncContextManager[Any]:
    if address is None:
        return contextlib.nullcontext()
    from kanthorq import endpoints

    return endpoints.serving(app, address)


async def serve(app: App, consumers: Sequence[str] | None, metrics: str | None = None) -> int:
    """Run the app until a signal: the first shuts down gracefully, a second exits at once."""
    loop = asyncio.get_running_loop()
    received: list[int] = []
    shutdowns: list[asyncio.Task[None]] = []  # keep a reference to the task

    def begin_shutdown(name: str) -> None:
        logger.warning(
            "received %s: shutting down gracefully (up to %.1fs for running handlers); "
            "send it again to exit at once",
            name,
            app.shutdown_timeout,
        )
        shutdowns.append(loop.create_task(app.shutdown()))

    def on_signal(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if received:  # exit from the handler itself, even if the loop is stuck
            os.write(2, f"{PROG}: received {name} again: exiting at once\n".encode())
            os._exit(128 + signum)
        received.append(signum)
        loop.call_soon_threadsafe(begin_shutdown, name)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        async with _monitoring(app, metrics):
            await app.run(consumers or None)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    logger.info("shut down")
    return EXIT_OK


# ---- migrate ------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace) -> int:
    if args.action == "down" and not args.yes:
        raise ConfigError(
            "migrate down reverts the schema and can drop data (reverting the first migration "
            "drops every stream and consumer table with their events and tasks); "
            "add --yes if you mean it"
        )
    return asyncio.run(_migrate(args))


async def _migrate(args: argparse.Namespace) -> int:
    cache_size = resolve_statement_cache_size(args.statement_cache_size)
    dsn = resolve_dsn(args.dsn)
    if dsn is None:
        dsn = await asyncio.to_thread(embedded.start)
        logger.warning("no DSN given: using the embedded PostgreSQL at %s", dsn)
    conn = await connect(parse_dsn(dsn), statement_cache_size=cache_size)
    try:
        if args.action == "up":
            done = await migrate.up(conn)
            _report_migrations("applied", done, "nothing to apply: the schema is up to date")
        elif args.action == "down":
            done = await migrate.down(conn, None if args.all else 1)
            _report_migrations("reverted", done, "nothing to revert: no migration is applied")
        else:
            pending = {m.version for m in await migrate.pending(conn)}
            for m in migrations():
                state = "pending" if m.version in pending else "applied"
                print(f"{m.version:04d}_{m.name}  {state}")
    finally:
        await conn.close()
    return EXIT_OK


def _report_migrations(verb: str, done: Sequence[Any], nothing: str) -> None:
    if not done:
        print(nothing)
    for m in done:
        print(f"{verb} {m.version:04d}_{m.name}")


# ---- pub ----------------------------------------------------------------------------


def cmd_pub(args: argparse.Namespace) -> int:
    # check everything before any connection is made
    subject = validate_subject(args.subject)
    stream = validate_name(args.stream, "stream")
    meta = _parse_metadata(args.metadata)
    schedule_ms(args.delay, args.at, 0)  # both given, or out of range: refused before connecting
    if args.lines and args.body is not None:
        raise ConfigError("--lines reads the events from stdin; do not give BODY as well")
    body: bytes | None = None
    if not args.lines:
        if args.body is not None:
            body = args.body.encode("utf-8", "surrogateescape")
        else:
            if sys.stdin.isatty():
                print("reading the body from stdin (end it with Ctrl-D)", file=sys.stderr)
            body = sys.stdin.buffer.read()
    return asyncio.run(_pub(args, subject, stream, meta, body))


def _parse_metadata(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidPayload(f"--metadata is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidPayload(f"--metadata must be a JSON object, got {type(value).__name__}")
    encode_metadata(value)  # the same checks the publisher makes
    return value


async def _pub(
    args: argparse.Namespace,
    subject: str,
    stream: str,
    meta: dict[str, Any] | None,
    body: bytes | None,
) -> int:
    async with App(args.dsn, stream=stream, statement_cache_size=args.statement_cache_size) as app:
        when = {"delay": args.delay, "at": args.at}
        if body is not None:
            print(await app.publish(subject, body, metadata=meta, **when), flush=True)
            return EXIT_OK
        async for batch in line_batches(sys.stdin.fileno(), args.batch_size):
            ids = await app.publish_many([(subject, line, meta) for line in batch], **when)
            sys.stdout.write("".join(f"{event_id}\n" for event_id in ids))
            sys.stdout.flush()
    return EXIT_OK


# ---- the parser ---------------------------------------------------------------------


def _common_options(*, sub: bool) -> argparse.ArgumentParser:
    """--dsn, --statement-cache-size, --debug and --log-level, accepted before and after
    the command name."""
    # in subcommands, SUPPRESS keeps an option given before the command from being reset
    unset: Any = argparse.SUPPRESS if sub else None
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("common options")
    group.add_argument(
        "--dsn",
        default=unset,
        help="PostgreSQL URI (default: $KANTHORQ_DSN, else the embedded server)",
    )
    group.add_argument(
        "--statement-cache-size",
        type=_non_negative_int,
        default=unset,
        metavar="N",
        help="prepared statements cached per connection; 0 behind PgBouncer in transaction "
        "mode (default: $KANTHORQ_STATEMENT_CACHE_SIZE, else 100)",
    )
    group.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS if sub else False,
        help="show the traceback of an error",
    )
    logconfig.add_options(group, unset)
    return parent


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="KanthorQ: an event and task system on PostgreSQL.",
        epilog=MAIN_EPILOG,
        formatter_class=fmt,
        parents=[_common_options(sub=False)],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = [_common_options(sub=True)]

    run = commands.add_parser(
        "run",
        help="run the workers of an app",
        description="Run the consumers of a kanthorq.App until SIGINT or SIGTERM.",
        epilog=RUN_EPILOG,
        formatter_class=fmt,
        parents=common,
    )
    run.add_argument("app", metavar="APP", help="the app as module:attribute, e.g. app:app")
    run.add_argument(
        "--consumer",
        action="append",
        metavar="NAME",
        help="run only this consumer (repeat for several; default: all)",
    )
    run.add_argument(
        "--app-dir",
        default=".",
        metavar="DIR",
        help="look for the app's module in DIR first (default: the current directory)",
    )
    run.add_argument(
        "--listen-dsn",
        metavar="DSN",
        help="PostgreSQL URI the workers LISTEN on for wake-ups: a direct connection when "
        "--dsn goes through PgBouncer (default: $KANTHORQ_LISTEN_DSN, else the app's)",
    )
    run.add_argument(
        "--metrics-port",
        metavar="[HOST:]PORT",
        help="serve /metrics, /healthz and /readyz on PORT (HOST: default 0.0.0.0); "
        "/metrics needs pip install 'kanthorq[metrics]'",
    )
    run.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help="worker processes to run and keep alive: a number, or auto (one per CPU); "
        "with --metrics-port P, worker i serves on port P+i (default: 1)",
    )
    run.set_defaults(handler=cmd_run, default_log_level="INFO", defer_logging=True)

    mig = commands.add_parser(
        "migrate",
        help="apply, revert or list the schema migrations",
        description="Apply, revert or list the schema migrations of kanthorq's tables.",
        epilog=MIGRATE_EPILOG,
        formatter_class=fmt,
        parents=common,
    )
    actions = mig.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (
        ("up", "apply every pending migration"),
        ("status", "list the migrations and whether each is applied"),
    ):
        actions.add_parser(
            name, help=text, description=text.capitalize() + ".", parents=common
        ).set_defaults(all=False, yes=False)
    down = actions.add_parser(
        "down",
        help="revert the last migration (--all: every one); needs --yes",
        description="Revert the last applied migration, or every one with --all. Reverting "
        "the first migration drops every stream and consumer table: it needs --yes.",
        parents=common,
    )
    down.add_argument("--all", action="store_true", help="revert every applied migration")
    down.add_argument("--yes", action="store_true", help="confirm: this can drop data")
    mig.set_defaults(handler=cmd_migrate, default_log_level="WARNING")

    pub = commands.add_parser(
        "pub",
        help="publish events",
        description="Publish one event (BODY, else stdin), or one per stdin line (--lines).",
        epilog=PUB_EPILOG,
        formatter_class=fmt,
        parents=common,
    )
    pub.add_argument("subject", metavar="SUBJECT", help="the event's subject, e.g. order.created")
    pub.add_argument("body", metavar="BODY", nargs="?", help="the body (default: stdin)")
    pub.add_argument("--stream", default="default", help="the stream (default: %(default)s)")
    pub.add_argument("--metadata", metavar="JSON", help="a JSON object stored with each event")
    pub.add_argument("--lines", action="store_true", help="one event per stdin line")
    when = pub.add_mutually_exclusive_group()
    when.add_argument(
        "--delay",
        type=non_negative_seconds,
        metavar="SECONDS",
        help="the tasks become runnable this many seconds from now",
    )
    when.add_argument(
        "--at",
        type=timeparse.instant,
        metavar="TIME",
        help="the tasks become runnable at this ISO 8601 time (with Z or an offset)",
    )
    pub.add_argument(
        "--batch-size",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="with --lines, events per COPY at most (default: %(default)s)",
    )
    pub.set_defaults(handler=cmd_pub, default_log_level="WARNING")
    admin_commands.register(commands, common)
    return parser


def _version() -> str:
    try:
        return importlib_metadata.version("kanthorq")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


# ---- entry point --------------------------------------------------------------------


def report(exc: BaseException, debug: bool) -> int:
    """Print ``exc`` as one line on stderr (and its traceback with --debug); the exit code."""
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, KanthorQError):
        message = str(exc)
    elif isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
        message = f"database error: {type(exc).__name__}: {exc}"
    else:
        message = f"{type(exc).__name__}: {exc}"
    if not debug and (isinstance(exc, AppImportFailed) or not isinstance(exc, KanthorQError)):
        message += " (run with --debug for the traceback)"
    message = "; ".join(part.strip() for part in message.splitlines() if part.strip())
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return EXIT_USAGE if isinstance(exc, USAGE_ERRORS) else EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # run --workers: the children's
    try:
        if not getattr(args, "defer_logging", False):  # run: after importing the app
            logconfig.from_args(args)
        return int(args.handler(args))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except BrokenPipeError:  # `kanthorq pub ... | head -1`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        return report(exc, args.debug)


if __name__ == "__main__":
    sys.exit(main())
