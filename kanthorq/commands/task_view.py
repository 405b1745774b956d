"""``kanthorq tasks list`` and ``kanthorq tasks show``."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

from kanthorq.admin import Admin
from kanthorq.admin.inspect import ORDERS
from kanthorq.admin.views import EventView, TaskDetail, TaskView, pretty_body, safe_text
from kanthorq.commands.common import FMT, emit, json_option, run_admin, table
from kanthorq.commands.filters import add_filter_options, filter_from_args
from kanthorq.commands.formatting import moment, one_line, relative
from kanthorq.errors import UnknownTask
from kanthorq.ids import validate_name

LIST_EPILOG = """\
examples:
  kanthorq tasks list --consumer email
  kanthorq tasks list --consumer email --state retryable --state discarded
  kanthorq tasks list --consumer email --subject 'order.*' --older-than 1h --json

NEXT RUN is when an available or retryable task runs (claims take the earliest first).
When more tasks match than --limit shows, the last line says how many ("50 of 400"),
counted up to 10,000; with --json: {"tasks": [...], "shown": 50, "matched": 400,
"matched_exact": true}.
On a consumer with millions of tasks, give --older-than with --order oldest: newest first
reads past every newer task before it finds old ones.
"""
SHOW_EPILOG = """\
examples:
  kanthorq tasks show --consumer email event_01jd9x2k3m4n5p6q7r8s9t0v1w
  kanthorq tasks show --consumer email event_01jd9x2k3m4n5p6q7r8s9t0v1w --json

Shows the task (state, attempts, next run), every error with its traceback, and the event
(subject, metadata, and the body: indented when it is JSON, a hex dump when it is binary).
With --json the body is {"size", "encoding": "json"|"utf-8"|"base64", "value"}.
"""
HEX_LIMIT = 64 * 1024  # bytes of a binary body that the text output dumps
COUNT_UP_TO = 10_001  # tasks list counts the matching tasks up to 10,000 exactly
RUNNABLE = ("available", "retryable")


def register(actions: Any, common: list[argparse.ArgumentParser]) -> None:
    listing = actions.add_parser(
        "list",
        help="list a consumer's tasks",
        description="List a consumer's tasks, newest event first (see --order).",
        epilog=LIST_EPILOG,
        formatter_class=FMT,
        parents=common,
    )
    add_filter_options(listing, limit_help="show at most N tasks")
    listing.add_argument(
        "--order",
        choices=list(ORDERS),
        default="newest",
        help="newest or oldest event first, or due: the next run first (default: %(default)s)",
    )
    json_option(listing)
    listing.set_defaults(handler=cmd_list)

    show = actions.add_parser(
        "show",
        help="show one task in full, with its errors and its event",
        description="Show a consumer's task for one event, with every error and the event.",
        epilog=SHOW_EPILOG,
        formatter_class=FMT,
        parents=common,
    )
    show.add_argument("event_id", metavar="EVENT_ID", help="the event's id (event_01...)")
    show.add_argument("--consumer", required=True, metavar="NAME", help="the consumer")
    json_option(show)
    show.set_defaults(handler=cmd_show)


# ---- list ---------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    validate_name(args.consumer, "consumer")
    where = filter_from_args(args)  # a bad state or subject fails before connecting

    async def action(admin: Admin) -> int:
        now = await admin.pool.fetchval("SELECT kanthorq_now_ms()")
        info = await admin.consumer(args.consumer)
        tasks = await admin.list_tasks(args.consumer, where, limit=args.limit, order=args.order)
        matched = len(tasks)
        if matched == args.limit:  # there may be more
            matched = await admin.count_tasks(args.consumer, where, up_to=COUNT_UP_TO)
        data = {
            "tasks": [t.as_dict() for t in tasks],
            "shown": len(tasks),
            "matched": matched,
            "matched_exact": matched < COUNT_UP_TO,
        }
        text = render_list(tasks, info.attempt_max, now)
        if matched > len(tasks):
            total = f"{matched:,}" if matched < COUNT_UP_TO else f"more than {matched - 1:,}"
            text += f"\n{len(tasks):,} of {total}; --limit to see more"
        emit(args, data, text)
        return 0

    return run_admin(args, action)


def next_run(task: TaskView, now: int) -> str:
    """When an available or retryable task runs: ``due 3s ago``, ``in 2m``; else ``-``."""
    if task.state not in RUNNABLE:
        return "-"
    return (
        f"due {relative(task.schedule_at, now)}"
        if task.schedule_at <= now
        else relative(task.schedule_at, now)
    )


def render_list(tasks: list[TaskView], attempt_max: int, now: int) -> str:
    if not tasks:
        return "no tasks match"
    headers = ["EVENT ID", "SUBJECT", "STATE", "ATTEMPTS", "NEXT RUN", "UPDATED", "LAST ERROR"]
    rows = [
        [
            t.event_id,
            one_line(t.subject, 40),
            t.state,
            f"{t.attempts_used}/{attempt_max}",
            next_run(t, now),
            relative(t.updated_at, now) if t.updated_at else "-",
            one_line(t.last_error, 60),
        ]
        for t in tasks
    ]
    return table(headers, rows)


# ---- show ---------------------------------------------------------------------------


def cmd_show(args: argparse.Namespace) -> int:
    validate_name(args.consumer, "consumer")

    async def action(admin: Admin) -> int:
        now = await admin.pool.fetchval("SELECT kanthorq_now_ms()")
        task = await admin.get_task(args.consumer, args.event_id)
        if task is None:
            raise UnknownTask(
                f"consumer {args.consumer!r} has no task for event {safe_text(repr(args.event_id))}"
            )
        emit(args, task.as_dict(), render_task(task, now))
        return 0

    return run_admin(args, action)


def _json_text(value: Any) -> str:
    return safe_text(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


def _fields(pairs: list[tuple[str, str]]) -> list[str]:
    """``name  value`` lines, the values aligned (also their second and later lines)."""
    width = max(len(name) for name, _ in pairs)
    follow = "\n" + " " * (width + 2)
    return [f"{name.ljust(width)}  {value.replace(chr(10), follow)}" for name, value in pairs]


@dataclass(frozen=True, slots=True)
class ErrorEntry:
    """One error record of a task, as the CLI and the dashboard show it: its number (from
    1), which attempt (a KanthorQ for Go record has none), when (ms; None when unknown), the
    message, the traceback (Go's stack), and the record's other fields."""

    number: int
    attempt: str
    at: int | None
    message: str | None
    traceback: str | None
    extra: dict[str, Any]


_KNOWN = frozenset({"at", "attempt", "error", "traceback", "client", "raw"})


def error_entries(task: TaskDetail) -> list[ErrorEntry]:
    """The task's error records, in order, ready to show (not yet escaped for a terminal)."""
    entries = []
    for number, record in enumerate(task.errors, 1):
        at = record.get("at")
        if record.get("client") == "go":
            attempt = "not numbered (a KanthorQ for Go record)"
        else:
            attempt = str(record.get("attempt", "?"))
        message = record.get("error", record.get("raw"))
        traceback = record.get("traceback")
        entries.append(
            ErrorEntry(
                number=number,
                attempt=attempt,
                at=at if isinstance(at, int) and not isinstance(at, bool) else None,
                message=None if message is None else str(message),
                traceback=str(traceback).rstrip() if traceback else None,
                extra={k: v for k, v in record.items() if k not in _KNOWN},
            )
        )
    return entries


def _errors(task: TaskDetail, now: int) -> list[str]:
    lines = [f"errors ({len(task.errors)})"]
    for entry in error_entries(task):
        when = "?" if entry.at is None else moment(entry.at, now)
        lines.append(f"  #{entry.number}  attempt {entry.attempt}  at {when}")
        if entry.message is not None:
            lines.append(_indent(safe_text(entry.message), "      "))
        if entry.traceback:
            lines.append(_indent(safe_text(entry.traceback), "      "))
        if entry.extra:
            lines.append(_indent(_json_text(entry.extra), "      "))
    return lines


def _event(event: EventView | None, now: int) -> list[str]:
    if event is None:
        return ["event", "  (the event no longer exists in its stream)"]
    kind, body = pretty_body(event.body, HEX_LIMIT)
    fields = [
        ("id", event.id),
        ("subject", safe_text(event.subject)),
        ("created", moment(event.created_at, now)),
        ("metadata", _json_text(event.metadata)),
    ]
    lines = ["event", *(_indent(line, "  ") for line in _fields(fields))]
    lines.append(f"  body ({kind}, {len(event.body):,} bytes)")
    if body:
        lines.append(_indent(body))
    return lines


def attempts_text(task: TaskDetail) -> str:
    """``2 of 4``, with what a resume or the Go library changes about it."""
    if task.attempts == 0 and (task.errors or task.finalized_at):
        # it ran (it is finalized, or failed) with no attempt counted: a client that does
        # not count them ran it (the KanthorQ for Go library)
        return f"0 of {task.attempt_max} (not counted by the Go library)"
    used = f"{task.attempts_used} of {task.attempt_max}"
    if task.attempts == task.attempts_used:
        return used
    return f"{used} since the last resume ({task.attempts} in all)"


def render_task(task: TaskDetail, now: int) -> str:
    runnable = task.state in RUNNABLE
    pairs = [
        ("task", task.event_id),
        ("consumer", f"{task.consumer} (stream {task.stream})"),
        ("subject", safe_text(task.subject)),
        ("state", f"{task.state} ({task.state_code})"),
        ("attempts", attempts_text(task)),
        ("next run", moment(task.schedule_at, now) if runnable else "-"),
        ("attempted", moment(task.attempted_at, now)),
        ("finalized", moment(task.finalized_at, now)),
        ("created", moment(task.created_at, now)),
        ("updated", moment(task.updated_at, now)),
        ("metadata", _json_text(task.metadata)),
    ]
    lines = [*_fields(pairs), "", *_errors(task, now), "", *_event(task.event, now)]
    return "\n".join(lines)
