"""What inspection returns: an overview of streams and consumers, tasks, and one task in full.

Times are milliseconds since the epoch, as stored; ages and timeouts are milliseconds too.
Every result has ``as_dict()``, a value that :func:`json.dumps` takes.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

# control characters a terminal acts on (all but tab and newline), and the bidi overrides
# that reorder what is shown
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe_text(text: str) -> str:
    """``text`` with the characters a terminal would act on escaped (``\\x1b``)."""
    return _UNSAFE.sub(_escape, text)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_json(text: str) -> tuple[bool, Any]:
    """``(True, value)`` when ``text`` is strict JSON (no NaN or Infinity), else
    ``(False, None)``."""
    try:
        return True, json.loads(text, parse_constant=_reject_constant)
    except ValueError:  # also the digit limit of huge integers
        return False, None


def body_kind(body: bytes) -> tuple[str, Any]:
    """What a body is, and its value: ``("empty", "")``, ``("json", value)``, ``("text",
    str)`` (UTF-8 without control characters but tab, CR and LF) or ``("binary", bytes)``."""
    if not body:
        return "empty", ""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "binary", body
    ok, value = decode_json(text)
    if ok:
        return "json", value
    if _CONTROL.search(text):
        return "binary", body
    return "text", text


def hexdump(data: bytes, limit: int | None = None) -> str:
    """``data`` as lines of 16 bytes: offset, hex, and the printable ASCII characters."""
    shown = data if limit is None else data[:limit]
    lines = []
    for offset in range(0, len(shown), 16):
        chunk = shown[offset : offset + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        chars = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append(f"{offset:08x}  {hexes:<47}  |{chars}|")
    if len(shown) < len(data):
        lines.append(f"... {len(data) - len(shown)} more bytes")
    return "\n".join(lines)


def pretty_body(body: bytes, hex_limit: int | None = None) -> tuple[str, str]:
    """``(kind, text)`` to show a body: JSON indented, text as it is, binary as a hex dump
    (its first ``hex_limit`` bytes). The text is safe for a terminal."""
    kind, value = body_kind(body)
    if kind == "json":
        return kind, safe_text(json.dumps(value, indent=2, ensure_ascii=False))
    if kind == "binary":
        return kind, hexdump(body, hex_limit)
    return kind, safe_text(value)


def body_dict(body: bytes) -> dict[str, Any]:
    """A body for JSON output: its size, and its value as ``json`` (decoded), ``utf-8`` text or
    ``base64``."""
    kind, value = body_kind(body)
    if kind == "json":
        return {"size": len(body), "encoding": "json", "value": value}
    if kind == "binary":
        return {"size": len(body), "encoding": "base64", "value": base64.b64encode(body).decode()}
    return {"size": len(body), "encoding": "utf-8", "value": value}


# ---- kanthorq show --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamOverview:
    """One stream. ``events`` is exact below the overview's ``exact_limit``, else estimated
    (``"events"`` in ``estimated``). ``note`` says what could not be read, and why."""

    name: str
    id: str
    events: int | None
    newest_event_id: str | None = None
    newest_event_at: int | None = None
    oldest_event_at: int | None = None
    estimated: tuple[str, ...] = ()
    note: str | None = None


@dataclass(frozen=True, slots=True)
class ConsumerOverview:
    """One consumer.

    ``behind``: events past its cursor (any subject); ``lag``: those its filters select, which
    are not tasks yet. ``tasks``: tasks per state name. ``oldest_due_age_ms``: how long the
    earliest available or retryable task due now has been due. ``past_visibility_timeout``:
    running tasks claimed longer ago than the visibility timeout. ``estimated`` names the
    figures that are estimates (``"lag"``, ``"behind"``, ``"tasks.completed"``, ...).
    """

    name: str
    stream: str
    includes: tuple[str, ...]
    excludes: tuple[str, ...]
    attempt_max: int
    visibility_timeout_ms: int
    cursor: str
    behind: int | None = None
    lag: int | None = None
    tasks: dict[str, int] = field(default_factory=dict)
    oldest_due_age_ms: int | None = None
    past_visibility_timeout: int | None = None
    estimated: tuple[str, ...] = ()
    note: str | None = None


@dataclass(frozen=True, slots=True)
class ScheduleOverview:
    """One schedule of periodic events (kanthorq/periodic.py): its last tick published and
    the next one (ms; 0 when none yet)."""

    name: str
    stream: str
    subject: str
    spec: str
    last_tick: int
    next_tick: int


@dataclass(frozen=True, slots=True)
class Overview:
    """Every stream and consumer, read in one snapshot at ``now``. Counts are exact up to
    ``exact_limit``; larger ones are estimates from PostgreSQL's statistics."""

    now: int
    exact_limit: int
    streams: list[StreamOverview]
    consumers: list[ConsumerOverview]
    schedules: list[ScheduleOverview] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- kanthorq tasks list|show -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskView:
    """One task in a list. ``attempts``: every attempt so far; ``attempts_used``: those that
    count against the budget (since the last resume). ``schedule_at`` is its next run when it
    is available or retryable. ``errors``: how many error records it has; ``last_error`` is
    the last one's message (its traceback is in :class:`TaskDetail`)."""

    event_id: str
    subject: str
    state: str
    state_code: int
    attempts: int
    attempts_used: int
    schedule_at: int
    attempted_at: int
    finalized_at: int
    errors: int
    last_error: str | None
    last_error_at: int | None
    created_at: int
    updated_at: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class EventView:
    id: str
    subject: str
    created_at: int
    metadata: Any
    body: bytes

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "subject": self.subject,
            "created_at": self.created_at,
            "metadata": self.metadata,
            "body": body_dict(self.body),
        }


@dataclass(frozen=True, slots=True)
class TaskDetail:
    """One task in full (``attempts`` and ``attempts_used`` as in :class:`TaskView`): every
    error record (``at``, ``attempt``, ``error``, and
    ``traceback`` when one was recorded; ``{"raw": text}`` for one that is not a JSON
    object), and its event (None when the event no longer exists)."""

    consumer: str
    stream: str
    event_id: str
    subject: str
    state: str
    state_code: int
    attempts: int
    attempts_used: int
    attempt_max: int
    schedule_at: int
    attempted_at: int
    finalized_at: int
    created_at: int
    updated_at: int
    metadata: Any
    errors: list[dict[str, Any]]
    event: EventView | None

    def as_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["event"] = None if self.event is None else self.event.as_dict()
        return data
