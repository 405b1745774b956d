"""``kanthorq pub``: publish one event, or one per stdin line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from kanthorq.app import App
from kanthorq.commands import timeparse
from kanthorq.commands.common import FMT, json_option
from kanthorq.commands.filters import positive_int
from kanthorq.errors import ConfigError, InvalidPayload
from kanthorq.ids import validate_name
from kanthorq.linereader import line_batches
from kanthorq.payloads import encode_metadata
from kanthorq.schedule import schedule_ms
from kanthorq.subjects import validate_subject

EPILOG = """\
examples:
  kanthorq pub order.cancelled '{"order_id": 42}'
  kanthorq pub order.cancelled --metadata '{"source": "cli"}' < body.json
  kanthorq pub order.cancelled --lines --stream orders < events.jsonl
  kanthorq pub invoice.remind '{"id": 7}' --delay 1h
  kanthorq pub invoice.remind '{"id": 7}' --at 2026-12-01T09:00:00Z
  kanthorq pub order.cancelled '{"order_id": 42}' --json

BODY is stored as its UTF-8 bytes, as is stdin's content; the body is never re-encoded.
With --lines, each non-empty stdin line is one event (its line ending removed), published
in batches of up to --batch-size as lines arrive. The event ids are printed one per line;
with --json, one JSON object per line: {"id": ...}. The database must be migrated (kanthorq
migrate up, or an app that opened it): pub changes no schema.
"""


def register(commands: Any, common: list[argparse.ArgumentParser]) -> None:
    pub = commands.add_parser(
        "pub",
        help="publish events",
        description="Publish one event (BODY, else stdin), or one per stdin line (--lines).",
        epilog=EPILOG,
        formatter_class=FMT,
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
        type=timeparse.duration,
        metavar="DURATION",
        help="the tasks become runnable this long from now: 90 (seconds), 90s, 15m, 2h, 3d",
    )
    when.add_argument(
        "--at",
        type=timeparse.instant,
        metavar="TIME",
        help="the tasks become runnable at this ISO 8601 time (with Z or an offset)",
    )
    pub.add_argument(
        "--batch-size",
        type=positive_int,
        default=1000,
        metavar="N",
        help="with --lines, events per COPY at most (default: %(default)s)",
    )
    json_option(pub)
    pub.set_defaults(handler=cmd_pub, default_log_level="WARNING")


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


def _write_ids(args: argparse.Namespace, ids: list[str]) -> None:
    if args.json:
        sys.stdout.write("".join(json.dumps({"id": event_id}) + "\n" for event_id in ids))
    else:
        sys.stdout.write("".join(f"{event_id}\n" for event_id in ids))
    sys.stdout.flush()


async def _pub(
    args: argparse.Namespace,
    subject: str,
    stream: str,
    meta: dict[str, Any] | None,
    body: bytes | None,
) -> int:
    async with App(
        args.dsn, stream=stream, migrate=False, statement_cache_size=args.statement_cache_size
    ) as app:
        when = {"delay": args.delay, "at": args.at}
        if body is not None:
            _write_ids(args, [await app.publish(subject, body, metadata=meta, **when)])
            return 0
        async for batch in line_batches(sys.stdin.fileno(), args.batch_size):
            ids = await app.publish_many([(subject, line, meta) for line in batch], **when)
            _write_ids(args, ids)
    return 0
