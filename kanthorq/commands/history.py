"""``kanthorq replay``, ``kanthorq prune events|tasks`` and ``kanthorq drop consumer|stream``."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

from kanthorq.admin import Admin, Changed
from kanthorq.admin.tasks import DEFAULT_BATCH
from kanthorq.admin.views import safe_text
from kanthorq.commands import timeparse
from kanthorq.commands.common import FMT, emit, json_option, run_admin
from kanthorq.commands.filters import positive_int
from kanthorq.errors import ConfigError, UnknownEvent
from kanthorq.ids import validate_name

REPLAY_EPILOG = """\
examples:
  kanthorq replay email --since 2026-11-01T00:00:00Z
  kanthorq replay email --since 2d
  kanthorq replay email --from-event event_01jd...

What it does: moves the consumer's cursor back, so that its workers convert the stream
again from that point, and make tasks for the events there that have none (say, events
that its filters matched only since they changed, or whose tasks were pruned).
What it does not do: run an event again that already has a task, whatever its state:
completed, discarded and cancelled tasks stay as they are (kanthorq tasks rerun runs them
again; kanthorq tasks resume, discarded and cancelled ones). It changes no task, never
moves the cursor forward (a cursor already at or before that point is left alone), and
converts nothing itself: the running workers do. An event id that is not in the stream is
an error (exit 2).
"""
PRUNE_EPILOG = """\
examples:
  kanthorq prune events --stream orders --before 30d
  kanthorq prune tasks --consumer email --before 2026-11-01T00:00:00Z

TIME is an age (90, 90s, 15m, 2h, 3d: that long ago, by the database's clock) or an ISO
8601 time with its offset. --stream defaults to the stream named default. Events are
deleted only when every consumer of the stream has converted them and has no open task for
them, unless --force. Tasks are deleted only when completed, cancelled or discarded.
"""


def register(commands: Any, common: list[argparse.ArgumentParser]) -> None:
    _replay(commands, common)
    _prune(commands, common)
    _drop(commands, common)


def _replay(commands: Any, common: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "replay",
        help="convert a consumer's stream again from a time or an event (no task runs twice)",
        description="Move a consumer's cursor back to a time or an event, so that the events "
        "from there that have no task get one. It does not run events that have a task "
        "again: that is kanthorq tasks rerun.",
        epilog=REPLAY_EPILOG,
        formatter_class=FMT,
        parents=common,
    )
    parser.add_argument("consumer", metavar="CONSUMER")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--since",
        type=timeparse.before,
        metavar="TIME",
        help="an age (2d: two days ago) or an ISO 8601 time",
    )
    where.add_argument("--from-event", metavar="EVENT_ID", help="this event's transaction on")
    json_option(parser)
    parser.set_defaults(handler=cmd_replay, default_log_level="WARNING")


def _prune(commands: Any, common: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "prune",
        help="delete old events, or old finalized tasks",
        description="Delete a stream's old events, or a consumer's old finalized tasks.",
        epilog=PRUNE_EPILOG,
        formatter_class=FMT,
        parents=common,
    )
    kinds = parser.add_subparsers(dest="kind", metavar="WHAT", required=True)
    events = kinds.add_parser("events", help="a stream's events", parents=common)
    events.add_argument(
        "--stream", default="default", metavar="NAME", help="the stream (default: %(default)s)"
    )
    events.add_argument("--force", action="store_true", help="also events still in use")
    tasks = kinds.add_parser("tasks", help="a consumer's finalized tasks", parents=common)
    tasks.add_argument("--consumer", required=True, metavar="NAME")
    for each in (events, tasks):
        each.add_argument(
            "--before",
            type=timeparse.before,
            required=True,
            metavar="TIME",
            help="older than this: an age (90, 90s, 15m, 2h, 3d) or an ISO 8601 time",
        )
        each.add_argument(
            "--batch-size",
            type=positive_int,
            default=DEFAULT_BATCH,
            metavar="N",
            help="rows per transaction (default: %(default)s)",
        )
        json_option(each)
    parser.set_defaults(handler=cmd_prune, default_log_level="WARNING")


def _drop(commands: Any, common: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "drop",
        help="delete a consumer, or a stream with its consumers; needs --yes",
        description="Delete a consumer (its task table), or a stream (its event table and "
        "its consumers). There is no undo: it needs --yes.",
        formatter_class=FMT,
        parents=common,
    )
    kinds = parser.add_subparsers(dest="kind", metavar="WHAT", required=True)
    for kind in ("consumer", "stream"):
        each = kinds.add_parser(kind, help=f"delete a {kind}", parents=common)
        each.add_argument("name", metavar="NAME")
        each.add_argument("--yes", action="store_true", help="confirm: this deletes data")
        json_option(each)
    parser.set_defaults(handler=cmd_drop, default_log_level="WARNING")


def _report(
    args: argparse.Namespace, label: str, action: Callable[[Admin], Awaitable[Changed]]
) -> int:
    async def act(admin: Admin) -> int:
        result = await action(admin)
        text = f"{label}: {result}"
        dropped = [f"{kind} {', '.join(names)}" for kind, names in result.details.items()]
        if label.startswith("drop") and dropped:
            text += f" ({'; '.join(dropped)})"
        emit(args, {"operation": label, **result.as_dict()}, text)
        if result.skipped.get("event not found"):
            raise UnknownEvent(
                f"the stream of consumer {args.consumer!r} has no event "
                f"{safe_text(repr(args.from_event))}"
            )
        return 0

    return run_admin(args, act)


def cmd_replay(args: argparse.Namespace) -> int:
    validate_name(args.consumer, "consumer")
    return _report(
        args,
        "replay",
        lambda admin: admin.replay(args.consumer, since=args.since, event_id=args.from_event),
    )


def cmd_prune(args: argparse.Namespace) -> int:
    if args.kind == "events":
        validate_name(args.stream, "stream")
        return _report(
            args,
            "prune events",
            lambda admin: admin.delete_events(
                args.stream, before=args.before, force=args.force, batch_size=args.batch_size
            ),
        )
    validate_name(args.consumer, "consumer")
    return _report(
        args,
        "prune tasks",
        lambda admin: admin.prune_tasks(
            args.consumer, before=args.before, batch_size=args.batch_size
        ),
    )


def cmd_drop(args: argparse.Namespace) -> int:
    validate_name(args.name, args.kind)
    if not args.yes:
        raise ConfigError(
            f"drop {args.kind} {args.name} deletes its table and every row in it; "
            "add --yes to confirm"
        )
    if args.kind == "consumer":
        return _report(
            args, "drop consumer", lambda admin: admin.drop_consumer(args.name, confirm=True)
        )
    return _report(args, "drop stream", lambda admin: admin.drop_stream(args.name, confirm=True))
