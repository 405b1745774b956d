"""``kanthorq show``: every stream and consumer, their lag and their tasks."""

from __future__ import annotations

import argparse
from typing import Any

from kanthorq.admin import Admin
from kanthorq.admin.overview import STATE_ORDER
from kanthorq.admin.views import ConsumerOverview, Overview, ScheduleOverview, StreamOverview
from kanthorq.commands.common import FMT, emit, json_option, run_admin, table
from kanthorq.commands.formatting import count, duration, moment, one_line
from kanthorq.ids import validate_name

EPILOG = """\
examples:
  kanthorq show
  kanthorq show --stream orders
  kanthorq show --json | jq '.consumers[] | {name, lag}'

Counts are exact up to 10,000. Larger ones are estimates from PostgreSQL's statistics
(shown with ~, listed under "estimated" with --json), so the command stays fast on streams
of millions of events: the events of a stream, a consumer's lag and its tasks per state.
LAG: events past the consumer's cursor that its filters select, not yet tasks.
OLDEST DUE: how long the earliest available or retryable task due now has been waiting.
PAST TIMEOUT: running tasks claimed longer ago than the visibility timeout (the next poll
of a worker takes them back).
"""
STATES = [s.name.lower() for s in STATE_ORDER]


def register(commands: Any, common: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "show",
        help="show every stream and consumer: events, lag, tasks per state",
        description="Show every stream (events, newest event) and every consumer (subject\n"
        "filters, lag, tasks per state, the oldest due task, tasks past their visibility\n"
        "timeout).",
        epilog=EPILOG,
        formatter_class=FMT,
        parents=common,
    )
    parser.add_argument("--stream", metavar="NAME", help="only this stream and its consumers")
    json_option(parser)
    parser.set_defaults(handler=cmd_show, default_log_level="WARNING")


def cmd_show(args: argparse.Namespace) -> int:
    if args.stream is not None:
        validate_name(args.stream, "stream")  # before any connection is made

    async def action(admin: Admin) -> int:
        overview = await admin.show(args.stream)
        emit(args, overview.as_dict(), render(overview))
        return 0

    return run_admin(args, action)


def subjects_text(consumer: ConsumerOverview) -> str:
    """A consumer's subject filters on one line: ``order.> except order.internal``."""
    text = ", ".join(consumer.includes) or "(none)"
    if consumer.excludes:
        text += " except " + ", ".join(consumer.excludes)
    return one_line(text, 60)


def _stream_row(stream: StreamOverview, now: int) -> list[str]:
    if stream.note is not None:
        return [stream.name, "?", stream.note]
    return [
        stream.name,
        count(stream.events, "events" in stream.estimated),
        moment(stream.newest_event_at, now),
    ]


def _consumer_row(consumer: ConsumerOverview) -> list[str]:
    age = consumer.oldest_due_age_ms
    return [
        consumer.name,
        consumer.stream,
        subjects_text(consumer),
        count(consumer.lag, "lag" in consumer.estimated),
        "-" if age is None else duration(age),
        count(consumer.past_visibility_timeout),
    ]


def _states_row(consumer: ConsumerOverview) -> list[str]:
    if not consumer.tasks:
        return [consumer.name] + ["?"] * len(STATES)
    cells = [consumer.name]
    for state in STATES:
        cells.append(count(consumer.tasks.get(state, 0), f"tasks.{state}" in consumer.estimated))
    return cells


def _schedule_row(schedule: ScheduleOverview, now: int) -> list[str]:
    return [
        schedule.name,
        schedule.stream,
        one_line(schedule.subject, 40),
        schedule.spec,
        moment(schedule.last_tick, now) if schedule.last_tick else "-",
        moment(schedule.next_tick, now) if schedule.next_tick else "-",
    ]


def render(overview: Overview) -> str:
    """The overview as text for a terminal: streams, consumers, and tasks per state."""
    if not overview.streams and not overview.consumers:
        return "no streams yet: publishing to a stream creates it"
    now = overview.now
    parts = [
        "STREAMS",
        table(["NAME", "EVENTS", "NEWEST EVENT"], [_stream_row(s, now) for s in overview.streams]),
    ]
    if overview.consumers:
        headers = ["NAME", "STREAM", "SUBJECTS", "LAG", "OLDEST DUE", "PAST TIMEOUT"]
        parts += ["", "CONSUMERS", table(headers, [_consumer_row(c) for c in overview.consumers])]
        headers = ["CONSUMER", *(s.upper() for s in STATES)]
        parts += ["", "TASKS", table(headers, [_states_row(c) for c in overview.consumers])]
        notes = [f"{c.name}: {c.note}" for c in overview.consumers if c.note]
        parts += ["", *notes] if notes else []
    else:
        parts += ["", "no consumers yet: running an app's workers registers them"]
    if overview.schedules:
        headers = ["SCHEDULE", "STREAM", "SUBJECT", "WHEN", "LAST TICK", "NEXT TICK"]
        parts += [
            "",
            "SCHEDULES",
            table(headers, [_schedule_row(s, now) for s in overview.schedules]),
        ]
    if any(s.estimated for s in overview.streams) or any(c.estimated for c in overview.consumers):
        parts += [
            "",
            f"~ estimated from PostgreSQL's statistics (counted up to {overview.exact_limit:,})",
        ]
    return "\n".join(parts)
