"""The command line: ``kanthorq run``, ``migrate``, ``pub`` and the admin commands
(:mod:`kanthorq.commands`).

Exit codes, the same for every command:

- 0: done. A selection that matched nothing, and tasks left alone for their state (both
  reported), are done too.
- 1: it failed while running: the database (unreachable, or without kanthorq's schema:
  only ``kanthorq migrate`` and the app under ``run`` change the schema), the network, the
  app's own code.
- 2: the command is wrong: its arguments, or something it names does not exist (a stream,
  a consumer, an event's task, an event). What does exist is still done, and reported.
- 128 + N: ``run`` stopped at once by a second signal N.

Errors are one line on stderr, ``kanthorq: error: ...``, with the traceback only under
``--debug``. Only the CLI configures logging; the library never does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from kanthorq import logconfig, supervisor
from kanthorq.app import App
from kanthorq.database import listen_target
from kanthorq.errors import (
    ConfigError,
    InvalidName,
    InvalidPayload,
    InvalidSubject,
    KanthorQError,
    UnknownConsumer,
    UnknownEvent,
    UnknownStream,
    UnknownTask,
)
from kanthorq.loader import AppImportFailed, load_app

PROG = "kanthorq"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
USAGE_ERRORS = (
    ConfigError,
    InvalidSubject,
    InvalidName,
    InvalidPayload,
    UnknownStream,
    UnknownConsumer,
    UnknownTask,
    UnknownEvent,
)

logger = logging.getLogger("kanthorq.cli")

MAIN_EPILOG = """\
examples:
  kanthorq run app:app                     run every consumer of app = kanthorq.App() in app.py
  kanthorq pub order.cancelled '{"order_id": 42}'
  kanthorq migrate up --dsn postgresql://user@localhost/db
  kanthorq completion bash > ~/.local/share/bash-completion/completions/kanthorq

The database: --dsn, else $KANTHORQ_DSN, else the embedded PostgreSQL under ./.kanthorq
(or $KANTHORQ_HOME; needs pip install 'kanthorq[embedded]'). Behind PgBouncer in
transaction pooling mode: --statement-cache-size 0 (or KANTHORQ_STATEMENT_CACHE_SIZE=0),
and for `run`, --listen-dsn (or $KANTHORQ_LISTEN_DSN) with a direct connection for LISTEN.
Only `migrate` (and an app, under `run`) changes the schema: the other commands refuse a
database whose migrations are not all applied (exit 1), blank or not.
Durations: 90 (seconds), 90s, 15m, 2h, 3d. Times: ISO 8601 with an offset
(2026-11-28T10:00:00Z). --json prints the result as JSON, for scripts, on every command
but run, dashboard, serve and completion.
Exit codes: 0 done (also when nothing matched); 1 failed while running (the database, the
network, the app); 2 a wrong command: bad arguments, or it names a stream, consumer, task
or event that does not exist (what exists is still done).
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

    admin_commands.register(commands, common, parser)
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
