"""What the storage holds: events, tasks and their states."""

from __future__ import annotations

import enum
from typing import Any

import msgspec


class TaskState(enum.IntEnum):
    """Task states; the codes are part of the storage contract."""

    DISCARDED = -102
    CANCELLED = -101
    PENDING = 0
    AVAILABLE = 1
    RUNNING = 2
    COMPLETED = 101
    RETRYABLE = 102


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One event of a stream. To publish one, leave ``id`` empty: the publisher fills it."""

    subject: str
    body: bytes = b""
    id: str = ""
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    created_at: int = 0


# The task metadata key that a resume writes: the attempts counted before it, which no
# longer use up the budget. attempt_count itself only grows, so every attempt has its own
# number and a stale attempt can never be mistaken for a current one.
ATTEMPT_BASE_KEY = "kanthorq.attempt_base"


class Task(msgspec.Struct, kw_only=True):
    """One consumer's task for an event, as it was when the worker claimed it."""

    event_id: str
    subject: str
    state: TaskState
    schedule_at: int
    finalized_at: int
    attempt_count: int
    attempted_at: int
    attempted_error: list[dict[str, Any]]
    metadata: dict[str, Any]
    created_at: int
    updated_at: int

    @property
    def attempts_used(self) -> int:
        """The attempts that count against the budget: those since the last resume."""
        base = self.metadata.get(ATTEMPT_BASE_KEY, 0)
        if isinstance(base, bool) or not isinstance(base, int):
            base = 0
        return max(self.attempt_count - base, 0)
