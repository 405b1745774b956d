"""``kanthorq serve``: publish over HTTP (:mod:`kanthorq.http`), served by uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
import signal
from typing import Any

from kanthorq.app import App
from kanthorq.commands.common import FMT
from kanthorq.commands.filters import positive_int
from kanthorq.errors import ConfigError
from kanthorq.extras import needs
from kanthorq.loader import load_app
from kanthorq.tokens import Token, Tokens

ENV_TOKEN = "KANTHORQ_HTTP_TOKEN"
logger = logging.getLogger("kanthorq.cli")

EPILOG = """\
examples:
  KANTHORQ_HTTP_TOKEN=s3cret kanthorq serve --dsn postgresql://user@localhost/db
  kanthorq serve --token-file tokens.txt --host 0.0.0.0 --port 8080
  kanthorq serve --app app:app --token-file tokens.txt

  curl -H 'Authorization: Bearer s3cret' -H 'Content-Type: application/json' \\
      -d '{"subject": "order.created", "body": {"id": 42}}' \\
      http://127.0.0.1:8080/v1/streams/orders/events

Every request needs a bearer token: --token (seen by other users of the machine in the
process list: prefer the others), $KANTHORQ_HTTP_TOKEN, or --token-file, a file with one
token per line: SECRET [name=NAME] [scopes=publish,read] [streams=orders,billing]. It will
not start without one. It binds to 127.0.0.1 unless --host says otherwise. The OpenAPI
document is at /v1/openapi.json. Needs pip install 'kanthorq[http]'.
"""


def register(commands: Any, common: list[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="publish over HTTP",
        description="Serve the HTTP publisher: POST events, read them and their tasks back.",
        epilog=EPILOG,
        formatter_class=FMT,
        parents=common,
    )
    serve.add_argument("--host", default="127.0.0.1", help="address (default: %(default)s)")
    serve.add_argument("--port", type=_port, default=8080, help="port (default: %(default)s)")
    serve.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="SECRET",
        help="a token with every scope (repeat for several)",
    )
    serve.add_argument("--token-file", metavar="PATH", help="a file of tokens, one per line")
    serve.add_argument(
        "--app",
        metavar="APP",
        help="publish through this kanthorq.App (module:attribute) instead of one on --dsn",
    )
    serve.add_argument(
        "--app-dir",
        default=".",
        metavar="DIR",
        help="with --app: look for its module in DIR first (default: the current directory)",
    )
    serve.add_argument(
        "--max-body-size",
        type=positive_int,
        metavar="BYTES",
        help="the largest request body (default: 1048576)",
    )
    serve.add_argument(
        "--max-batch",
        type=positive_int,
        metavar="N",
        help="the most events in a batch (default: 1000)",
    )
    serve.add_argument(
        "--dashboard",
        action="store_true",
        help="also serve the dashboard under /dashboard/, with the same tokens (its actions "
        "need the admin scope; needs pip install 'kanthorq[dashboard]')",
    )
    serve.add_argument(
        "--access-log", action="store_true", help="log every request (uvicorn's access log)"
    )
    serve.set_defaults(handler=cmd_serve, default_log_level="INFO")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port from 0 to 65535, got {text!r}")
    return port


def tokens_of(args: argparse.Namespace) -> Tokens:
    """The tokens of --token, $KANTHORQ_HTTP_TOKEN and --token-file, together."""
    found: list[Token] = []
    for n, secret in enumerate(args.token):
        found.append(Token(secret, name=f"--token {n + 1}"))
    env = os.environ.get(ENV_TOKEN, "").strip()
    if env:
        found.append(Token(env, name=ENV_TOKEN))
    if args.token_file is not None:
        try:
            found.extend(Tokens.load(args.token_file))
        except OSError as exc:
            raise ConfigError(f"--token-file: {exc.strerror}: {args.token_file}") from None
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if not found:
        raise ConfigError(
            "kanthorq serve needs a token: --token, $KANTHORQ_HTTP_TOKEN or --token-file; "
            "it accepts no request without one"
        )
    return Tokens(found)


def cmd_serve(args: argparse.Namespace) -> int:
    tokens = tokens_of(args)  # checked before anything is imported or opened
    with needs("http"):
        import uvicorn

        from kanthorq import http
    if args.app is not None:
        app = load_app(args.app, args.app_dir)
        if args.dsn is not None:
            app.dsn = args.dsn
        if args.statement_cache_size is not None:
            app.statement_cache_size = args.statement_cache_size
    else:
        app = App(args.dsn, migrate=False, statement_cache_size=args.statement_cache_size)
    limits = {
        name: getattr(args, name)
        for name in ("max_body_size", "max_batch")
        if getattr(args, name) is not None
    }
    asgi = http.app(app, tokens=tokens, **limits)
    if args.dashboard:
        with needs("dashboard"):
            from starlette.routing import Mount

            from kanthorq import dashboard
        # one process, one set of tokens; the HTTP app's lifespan opens the app both use
        asgi.router.routes.append(Mount("/dashboard", app=dashboard.app(app, tokens=tokens)))
    config = uvicorn.Config(
        asgi,
        host=args.host,
        port=args.port,
        log_config=None,  # kanthorq's logging, configured by the CLI
        access_log=args.access_log,
        # nothing here reads the client's address: X-Forwarded-* need not be parsed
        proxy_headers=False,
        lifespan="on",
    )
    logger.info(
        "publishing over HTTP on http://%s:%d with %d token(s)%s",
        args.host,
        args.port,
        len(tokens),
        f"; the dashboard on http://{args.host}:{args.port}/dashboard/" if args.dashboard else "",
    )
    # uvicorn stops gracefully on SIGINT or SIGTERM, then raises the signal again for the
    # handler it found: this one ignores it, so the command exits 0 as `kanthorq run` does
    previous = {s: signal.signal(s, _ignore) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.Server(config).run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def _ignore(signum: int, frame: object) -> None:
    return None
