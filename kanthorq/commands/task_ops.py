"""``kanthorq tasks cancel|resume|retry|rerun``: change tasks by event id or by filter."""

from __future__ import annotations

import argparse
from typing import Any

from kanthorq.admin import Admin, Changed
from kanthorq.admin.tasks import DEFAULT_BATCH
from kanthorq.admin.views import safe_text
from kanthorq.commands.common import FMT, emit, json_option, run_admin
from kanthorq.commands.filters import add_filter_options, filter_from_args, positive_int
from kanthorq.errors import ConfigError, UnknownTask

OPERATIONS = {
    "cancel": (
        "cancel pending, available and retryable tasks",
        "Cancel tasks: they will not run unless resumed. Only pending, available and "
        "retryable tasks are cancelled; a running task is cancelled by its handler "
        "(msg.cancel()).",
    ),
    "resume": (
        "make discarded and cancelled tasks available now, attempts given back",
        "Resume discarded and cancelled tasks: they become available now, and their "
        "attempts no longer count against the consumer's max_retries.",
    ),
    "retry": (
        "make retryable tasks available now",
        "Retry retryable tasks now, instead of after their backoff.",
    ),
    "rerun": (
        "run completed, discarded and cancelled tasks again, as new attempts",
        "Run finished tasks again (after fixing a handler): completed, discarded and\n"
        "cancelled tasks become available now, as new attempts with their budget starting\n"
        "again; a late ack of an earlier attempt still changes nothing. Tasks whose event\n"
        "retention deleted are left alone. (replay makes tasks only for events that have\n"
        "none; rerun runs existing tasks again.)",
    ),
}
EPILOG = """\
examples:
  kanthorq tasks {op} --consumer email EVENT_ID [EVENT_ID ...]
  kanthorq tasks {op} --consumer email --subject 'order.*' --older-than 1h
  kanthorq tasks {op} --consumer email --all

Tasks are changed in batches of --batch-size, one transaction each. The report counts the
tasks changed and, per reason, those left alone (wrong state, not found). An EVENT_ID
without a task is an error (exit 2), reported after the others are changed.
"""


def register(actions: Any, common: list[argparse.ArgumentParser]) -> None:
    for op, (short, long) in OPERATIONS.items():
        parser = actions.add_parser(
            op,
            help=short,
            description=long,
            epilog=EPILOG.format(op=op),
            formatter_class=FMT,
            parents=common,
        )
        parser.add_argument("event_ids", nargs="*", metavar="EVENT_ID", help="only these tasks")
        add_filter_options(parser, with_limit=False)
        parser.add_argument(
            "--all", action="store_true", help="select every task of the consumer (no filter)"
        )
        parser.add_argument(
            "--batch-size",
            type=positive_int,
            default=DEFAULT_BATCH,
            metavar="N",
            help="tasks per transaction (default: %(default)s)",
        )
        json_option(parser)
        parser.set_defaults(handler=cmd_task_op, operation=op)


def cmd_task_op(args: argparse.Namespace) -> int:
    selection = filter_from_args(args)  # checked before connecting
    narrowed = bool(args.state or args.subject is not None or args.older_than is not None)
    if not (args.event_ids or narrowed or args.all):
        raise ConfigError(
            f"tasks {args.operation} needs EVENT_IDs, a filter (--state, --subject, "
            "--older-than), or --all for every task of the consumer"
        )
    if args.all and (args.event_ids or narrowed):
        raise ConfigError("--all selects every task; do not combine it with ids or filters")

    async def act(admin: Admin) -> int:
        operation = {
            "cancel": admin.cancel,
            "resume": admin.resume,
            "retry": admin.retry_now,
            "rerun": admin.rerun,
        }[args.operation]
        result: Changed = await operation(
            args.consumer,
            args.event_ids or None,
            filter=selection,
            batch_size=args.batch_size,
        )
        emit(args, {"operation": args.operation, **result.as_dict()}, f"{args.operation}: {result}")
        missing = result.details.get("not_found")
        if missing:
            raise UnknownTask(
                f"consumer {args.consumer!r} has no task for "
                + ", ".join(safe_text(repr(event_id)) for event_id in missing)
            )
        return 0

    return run_admin(args, act)
