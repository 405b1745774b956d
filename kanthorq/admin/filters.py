"""Which tasks an admin operation selects: states, a subject pattern, an age, event ids."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kanthorq.entities import TaskState
from kanthorq.errors import ConfigError
from kanthorq.subjects import validate_filter

STATE_NAMES: dict[str, TaskState] = {s.name.lower(): s for s in TaskState}


def parse_state(value: str | int | TaskState) -> TaskState:
    """A state from its name (``"retryable"``), its code (``102``) or itself."""
    if isinstance(value, TaskState):
        return value
    if isinstance(value, str):
        found = STATE_NAMES.get(value.strip().lower())
        if found is not None:
            return found
    elif isinstance(value, int) and not isinstance(value, bool):
        try:
            return TaskState(value)
        except ValueError:
            pass
    names = ", ".join(STATE_NAMES)
    raise ConfigError(f"unknown task state {value!r}; the states are {names}")


def state_name(code: int) -> str:
    """The name of a state code; an unknown code (written by another client) as itself."""
    try:
        return TaskState(code).name.lower()
    except ValueError:
        return str(code)


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """Tasks of one consumer. Empty parts select everything.

    ``states``: any of these states. ``subject``: a NATS subject filter (``order.*``).
    ``older_than``: created at least this many seconds ago. ``event_ids``: only these.
    """

    states: tuple[TaskState, ...] = ()
    subject: str | None = None
    older_than: float | None = None
    event_ids: tuple[str, ...] = field(default=())

    @classmethod
    def build(
        cls,
        states: Iterable[str | int | TaskState] | str | int | TaskState | None = None,
        subject: str | None = None,
        older_than: float | None = None,
        event_ids: Iterable[str] | None = None,
    ) -> TaskFilter:
        """A checked filter: every bad part is a clear error before any SQL runs."""
        if states is None:
            parsed: tuple[TaskState, ...] = ()
        elif isinstance(states, str | int):
            parsed = (parse_state(states),)
        else:
            parsed = tuple(dict.fromkeys(parse_state(s) for s in states))
        if subject is not None:
            subject = validate_filter(subject)
        if older_than is not None and (
            isinstance(older_than, bool)
            or not isinstance(older_than, int | float)
            or not 0 <= older_than < 1e12
        ):
            raise ConfigError(f"older_than must be a number of seconds >= 0, got {older_than!r}")
        ids: tuple[str, ...] = ()
        if event_ids is not None:
            if isinstance(event_ids, str):
                raise ConfigError("event_ids must be a list of event ids, not one string")
            ids = tuple(dict.fromkeys(event_ids))
            bad = [i for i in ids if not isinstance(i, str) or not i or len(i) > 64]
            if bad:
                raise ConfigError(f"not an event id: {bad[0]!r}")
        return cls(parsed, subject, older_than, ids)

    def where(self, alias: str = "t", first: int = 1) -> tuple[str, list[Any]]:
        """A SQL condition on the task table ``alias`` and its parameters, numbered from
        ``$first``. Values are always parameters; only fixed text is put in the SQL."""
        parts: list[str] = []
        params: list[Any] = []

        def param(value: Any) -> str:
            params.append(value)
            return f"${first + len(params) - 1}"

        if self.states:
            parts.append(f"{alias}.state = ANY({param([int(s) for s in self.states])}::SMALLINT[])")
        if self.subject is not None:
            parts.append(f"{alias}.subject ~ kanthorq_subject_regex({param(self.subject)})")
        if self.older_than is not None:
            age = param(round(self.older_than * 1000))
            parts.append(f"{alias}.created_at <= kanthorq_now_ms() - {age}::BIGINT")
        if self.event_ids:
            parts.append(f"{alias}.event_id = ANY({param(list(self.event_ids))}::TEXT[])")
        return (" AND ".join(parts) or "TRUE"), params
