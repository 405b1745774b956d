"""``kanthorq migrate up|down|status``: the only commands that change the schema."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from kanthorq import embedded, migrate
from kanthorq.commands.common import FMT, emit, json_option
from kanthorq.database import connect, parse_dsn, resolve_dsn, resolve_statement_cache_size
from kanthorq.errors import ConfigError
from kanthorq.sqlfiles import Migration, migrations

logger = logging.getLogger("kanthorq.cli")

EPILOG = """\
examples:
  kanthorq migrate status
  kanthorq migrate status --json
  kanthorq migrate up
  kanthorq migrate down --yes          revert the last migration
  kanthorq migrate down --all --yes    revert every migration

Apps apply the migrations when they open (App(migrate=False) turns that off); these commands
run them by hand, and are the only commands that change the schema: the others refuse a
database whose migrations are not all applied (exit 1, SchemaNotReady). Reverting the first
migration drops every stream and consumer table, with their events and tasks, so 'down'
needs --yes.
"""


def register(commands: Any, common: list[argparse.ArgumentParser]) -> None:
    mig = commands.add_parser(
        "migrate",
        help="apply, revert or list the schema migrations",
        description="Apply, revert or list the schema migrations of kanthorq's tables.",
        epilog=EPILOG,
        formatter_class=FMT,
        parents=common,
    )
    actions = mig.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (
        ("up", "apply every pending migration"),
        ("status", "list the migrations and whether each is applied"),
    ):
        each = actions.add_parser(
            name, help=text, description=text.capitalize() + ".", parents=common
        )
        each.set_defaults(all=False, yes=False)
        json_option(each)
    down = actions.add_parser(
        "down",
        help="revert the last migration (--all: every one); needs --yes",
        description="Revert the last applied migration, or every one with --all. Reverting "
        "the first migration drops every stream and consumer table: it needs --yes.",
        parents=common,
    )
    down.add_argument("--all", action="store_true", help="revert every applied migration")
    down.add_argument("--yes", action="store_true", help="confirm: this can drop data")
    json_option(down)
    mig.set_defaults(handler=cmd_migrate, default_log_level="WARNING")


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
            _report(args, "applied", done, "nothing to apply: the schema is up to date")
        elif args.action == "down":
            done = await migrate.down(conn, None if args.all else 1)
            _report(args, "reverted", done, "nothing to revert: no migration is applied")
        else:
            pending = {m.version for m in await migrate.pending(conn)}
            rows = [
                {"version": m.version, "name": m.name, "applied": m.version not in pending}
                for m in migrations()
            ]
            lines = [
                f"{r['version']:04d}_{r['name']}  {'applied' if r['applied'] else 'pending'}"
                for r in rows
            ]
            emit(args, rows, "\n".join(lines))
    finally:
        await conn.close()
    return 0


def _report(args: argparse.Namespace, verb: str, done: Sequence[Migration], nothing: str) -> None:
    data = {verb: [{"version": m.version, "name": m.name} for m in done]}
    text = "\n".join(f"{verb} {m.version:04d}_{m.name}" for m in done) or nothing
    emit(args, data, text)
