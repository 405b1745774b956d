"""``kanthorq dashboard``: the web dashboard (``pip install 'kanthorq[dashboard]'``)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import sys
from typing import Any

from kanthorq.commands.common import FMT
from kanthorq.errors import ConfigError

TOKEN_ENV = "KANTHORQ_DASHBOARD_TOKEN"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8089
EPILOG = """\
examples:
  kanthorq dashboard                                 the database of --dsn / $KANTHORQ_DSN
  kanthorq dashboard app:app                         the database of app = kanthorq.App(...)
  KANTHORQ_DASHBOARD_TOKEN=... kanthorq dashboard --host 0.0.0.0 --port 8089

Safe by default: it binds 127.0.0.1. Without a token (--token or $KANTHORQ_DASHBOARD_TOKEN)
it is read-only, and says so; with one, every request needs it (a sign-in form sets a
cookie; scripts may send Authorization: Bearer TOKEN) and actions are POSTs with a CSRF
check. Binding another address without a token is refused (exit 2).
It never changes the schema and runs no workers: run the app with kanthorq run.
"""


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only: ``localhost`` or a loopback address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to serve on an address that other machines reach without a token."""
    if not token and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve the dashboard on {host} without a token: anyone who reaches "
            "it could read every event; give --token (or KANTHORQ_DASHBOARD_TOKEN), or bind "
            "127.0.0.1"
        )


def register(commands: Any, common: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "dashboard",
        help="serve the web dashboard: streams, consumers, tasks, and the operations",
        description="Serve the web dashboard on a database: every stream and consumer, the\n"
        "tasks with their errors, and cancel, resume, retry, rerun, replay and drop.",
        epilog=EPILOG,
        formatter_class=FMT,
        parents=common,
    )
    parser.add_argument(
        "app", nargs="?", metavar="APP", help="take the database from this app (module:attribute)"
    )
    parser.add_argument(
        "--app-dir", default=".", metavar="DIR", help="look for APP's module in DIR first"
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="the address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="the port (default: %(default)s)"
    )
    parser.add_argument(
        "--token", metavar="TOKEN", help=f"allow actions with this token (default: ${TOKEN_ENV})"
    )
    parser.add_argument(
        "--refresh",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="how often the overview refreshes itself (default: %(default)s)",
    )
    parser.set_defaults(handler=cmd_dashboard, default_log_level="WARNING")


def cmd_dashboard(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get(TOKEN_ENV) or None
    check_exposure(args.host, token)  # before anything is imported or opened

    import kanthorq.dashboard  # noqa: F401  (a missing extra is said here)
    from kanthorq.app import App
    from kanthorq.dashboard.serve import server, standalone
    from kanthorq.loader import load_app

    dsn, cache = args.dsn, args.statement_cache_size
    if args.app is not None:
        loaded = load_app(args.app, args.app_dir)
        dsn = dsn or loaded.dsn
        cache = loaded.statement_cache_size if cache is None else cache
    kq = App(dsn, migrate=False, statement_cache_size=cache)
    web = standalone(kq, token, args.refresh)
    mode = "every request needs the token" if token else "read-only: no token"
    print(
        f"kanthorq dashboard on http://{args.host}:{args.port}/ ({mode}); Ctrl-C stops it",
        file=sys.stderr,
    )
    asyncio.run(server(web, args.host, args.port).serve())
    return 0
