"""What the admin commands share: opening the database, options, and printing results."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from kanthorq.admin import Admin
from kanthorq.app import App

FMT = argparse.RawDescriptionHelpFormatter


def run_admin(args: argparse.Namespace, action: Callable[[Admin], Awaitable[int]]) -> int:
    """Open the database named by --dsn ($KANTHORQ_DSN, else the embedded server) without
    migrating it (only ``kanthorq migrate`` changes the schema: a database without it is
    :class:`kanthorq.errors.SchemaNotReady`), with --statement-cache-size
    ($KANTHORQ_STATEMENT_CACHE_SIZE), run ``action`` on its admin, and return the exit code."""

    async def main() -> int:
        async with App(
            args.dsn, migrate=False, statement_cache_size=args.statement_cache_size
        ) as app:
            return await action(app.admin)

    return asyncio.run(main())


def json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON, for scripts")


def confirm_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--yes", action="store_true", help=f"confirm: this {what}")


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    """``data`` as JSON with --json, else ``text``."""
    if getattr(args, "json", False):
        json.dump(data, sys.stdout, indent=2, ensure_ascii=False, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table, columns padded to their widest cell."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)
