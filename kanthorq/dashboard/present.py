"""What the dashboard's pages show, worked out from the admin's results: plain values for the
templates, with no web framework in them. Numbers, times and tasks are formatted as the CLI
formats them (:mod:`kanthorq.commands.formatting`, :mod:`kanthorq.commands.task_view`)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kanthorq.admin import Activity, TaskFilter
from kanthorq.admin.filters import STATE_NAMES
from kanthorq.admin.views import TaskDetail, pretty_body
from kanthorq.commands import timeparse
from kanthorq.commands.task_view import HEX_LIMIT, ErrorEntry, error_entries
from kanthorq.errors import ConfigError
from kanthorq.ids import event_id_at

PAGE_SIZE = 50
LIST_TIMEOUT = 0.3  # seconds a page's listing may take: a filter few tasks match reads them all
# A task is made after its event, so one created before a time has an event id from before
# it; with this margin (ms) for publishers' clocks, a newest-first list with an age starts
# there, not at the newest task
AGE_MARGIN_MS = 300_000
ORDERS = ("newest", "oldest")
STATES = tuple(STATE_NAMES)
OPERATIONS = {
    "cancel": "Cancel: pending, available and retryable tasks will not run unless resumed",
    "resume": "Resume: discarded and cancelled tasks run again, their attempts given back",
    "retry": "Retry now: retryable tasks run now, not after their backoff",
    "rerun": "Rerun: completed, discarded and cancelled tasks run again as new attempts",
}
COLORS = {"completed": "#2e7d32", "retried": "#ef6c00", "discarded": "#c62828"}


def _problem(exc: argparse.ArgumentTypeError | ValueError) -> ConfigError:
    return ConfigError(str(exc))


@dataclass(frozen=True, slots=True)
class Listing:
    """What a consumer page lists: the filter as given (to show it again in the form) and
    as a :class:`TaskFilter`, the order and the page (``after`` an event id)."""

    states: tuple[str, ...] = ()
    subject: str = ""
    age: str = ""
    order: str = "newest"
    after: str = ""
    filter: TaskFilter = field(default_factory=TaskFilter)

    @property
    def filtered(self) -> bool:
        return bool(self.states or self.subject or self.age)

    @property
    def only_states(self) -> bool:
        """Whether the filter is on states alone (or empty): show's counts then apply."""
        return not self.subject and not self.age

    def query(self, **changes: Any) -> list[tuple[str, str]]:
        """The page's query string parameters, with ``changes``."""
        values: dict[str, Any] = {
            "state": list(self.states),
            "subject": self.subject,
            "age": self.age,
            "order": self.order,
            "after": self.after,
        } | changes
        pairs: list[tuple[str, str]] = []
        for key, value in values.items():
            for one in value if isinstance(value, list) else [value]:
                if one and not (key == "order" and one == "newest"):
                    pairs.append((key, str(one)))
        return pairs


def listing(
    states: list[str], subject: str | None, age: str | None, order: str | None, after: str | None
) -> Listing:
    """A :class:`Listing` from a page's parameters; :class:`ConfigError` for a bad one."""
    chosen = tuple(dict.fromkeys(s.strip().lower() for s in states if s.strip()))
    subject = (subject or "").strip()
    age = (age or "").strip()
    order = (order or "newest").strip()
    if order not in ORDERS:
        raise ConfigError(f"order must be newest or oldest, got {order!r}")
    try:
        seconds = timeparse.duration(age) if age else None
    except argparse.ArgumentTypeError as exc:
        raise _problem(exc) from None
    built = TaskFilter.build(
        states=list(chosen) or None, subject=subject or None, older_than=seconds
    )
    return Listing(chosen, subject, age, order, (after or "").strip(), built)


def start_of(chosen: Listing, now: int) -> str | None:
    """Where a newest-first list with an age filter starts: past the event ids of the tasks
    too young to match, instead of reading through them (``now``: the database's time)."""
    if chosen.order != "newest" or chosen.filter.older_than is None:
        return None
    return event_id_at(now - round(chosen.filter.older_than * 1000) + AGE_MARGIN_MS)


def since(text: str) -> datetime | timedelta:
    """A replay's starting point: an age (``2h``) or an ISO 8601 time with its offset."""
    try:
        return timeparse.before(text.strip())
    except argparse.ArgumentTypeError as exc:
        raise _problem(exc) from None


# ---- a task ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Body:
    kind: str  # json, text, binary or empty
    size: int
    text: str


def body(task: TaskDetail) -> Body | None:
    """The task's event body, indented when it is JSON, a hex dump when binary."""
    if task.event is None:
        return None
    kind, text = pretty_body(task.event.body, HEX_LIMIT)
    return Body(kind, len(task.event.body), text)


def json_text(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def errors(task: TaskDetail) -> list[ErrorEntry]:
    """The task's attempts that failed, newest first."""
    return list(reversed(error_entries(task)))


# ---- the chart ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    color: str
    title: str


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    peak: int
    totals: dict[str, int]
    colors: dict[str, str]
    complete: bool


def chart(activity: Activity, width: int = 600, height: int = 120) -> Chart:
    """Stacked bars, one per minute (oldest on the left): completed, retried, discarded."""
    series = {
        "completed": activity.completed,
        "retried": activity.retried,
        "discarded": activity.discarded,
    }
    minutes = activity.minutes
    peak = max((sum(s[m] for s in series.values()) for m in range(minutes)), default=0)
    step = width / minutes
    scale = (height - 4) / peak if peak else 0.0
    bars = []
    for minute in range(minutes):
        bottom = float(height)
        ago = minutes - minute
        for kind, values in series.items():
            count = values[minute]
            if not count:
                continue
            tall = max(count * scale, 1.0)
            bottom -= tall
            bars.append(
                Bar(
                    x=round(minute * step + 1, 1),
                    y=round(bottom, 1),
                    width=round(max(step - 2, 1), 1),
                    height=round(tall, 1),
                    color=COLORS[kind],
                    title=f"{count:,} {kind}, {ago} to {ago - 1} min ago",
                )
            )
    totals = {kind: sum(values) for kind, values in series.items()}
    return Chart(width, height, bars, peak, totals, COLORS, activity.complete)
