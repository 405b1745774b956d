"""``message(subject, body)``: a :class:`kanthorq.Message` for calling a handler directly.

No database: its task looks freshly claimed (attempt 1 unless told), and ``ack``, ``nack``,
``cancel`` and ``extend`` are recorded instead of applied, so a unit test can assert on
them. They behave as on a real message otherwise: only the first of ``ack``, ``nack`` and
``cancel`` acts (and returns True), and ``extend`` after one of them returns False.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kanthorq.entities import Event, Task, TaskState
from kanthorq.errors import ConfigError
from kanthorq.ids import new_id, now_ms
from kanthorq.message import Message, Outcome
from kanthorq.payloads import encode_body, encode_metadata
from kanthorq.subjects import validate_subject

MAX_BODY = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Call:
    """One recorded call: ``name`` is ``ack``, ``nack``, ``cancel`` or ``extend``;
    ``reason`` a nack's, ``seconds`` an extend's, ``conn`` the connection given."""

    name: str
    reason: str | None = None
    seconds: float | None = None
    conn: object | None = None


class _Recorder:
    """The settler of a test message: it records, and changes nothing anywhere."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    async def settle(self, msg: Message, outcome: Outcome, reason: str | None, conn: Any) -> bool:
        self.calls.append(Call(outcome.value, reason=reason, conn=conn))
        return True

    async def extend(self, msg: Message, seconds: float) -> bool:
        self.calls.append(Call("extend", seconds=seconds))
        return True


class RecordedMessage(Message):
    """A :class:`kanthorq.Message` whose settling is recorded in :attr:`calls`."""

    __slots__ = ("_recorder",)

    def __init__(self, event: Event, task: Task) -> None:
        recorder = _Recorder()
        super().__init__(event, task, recorder)
        self._recorder = recorder

    @property
    def calls(self) -> list[Call]:
        """Every ack, nack, cancel and extend that acted, in order."""
        return list(self._recorder.calls)

    def _named(self, name: str) -> list[Call]:
        return [call for call in self._recorder.calls if call.name == name]

    @property
    def acked(self) -> bool:
        return bool(self._named("ack"))

    @property
    def nacked(self) -> bool:
        return bool(self._named("nack"))

    @property
    def nack_reason(self) -> str | None:
        found = self._named("nack")
        return found[0].reason if found else None

    @property
    def cancelled(self) -> bool:
        return bool(self._named("cancel"))

    @property
    def extended(self) -> list[float]:
        """The seconds of each ``extend`` call."""
        return [call.seconds for call in self._named("extend") if call.seconds is not None]


def message(
    subject: str,
    body: Any = b"",
    *,
    metadata: dict[str, Any] | None = None,
    event_id: str | None = None,
    attempt: int = 1,
    created_at: int | None = None,
) -> RecordedMessage:
    """A message for ``subject`` whose body is ``body`` encoded as ``publish`` encodes it
    (bytes as they are; a dict, a Struct, a dataclass or a Pydantic model as JSON), on its
    ``attempt``. Nothing is written anywhere."""
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ConfigError(f"attempt must be an int >= 1, got {attempt!r}")
    subject = validate_subject(subject)
    data = encode_body(body, MAX_BODY)
    encode_metadata(metadata)  # the checks publish makes
    at = now_ms() if created_at is None else created_at
    event = Event(
        id=event_id or new_id("event"),
        subject=subject,
        body=data,
        metadata=dict(metadata or {}),
        created_at=at,
    )
    task = Task(
        event_id=event.id,
        subject=subject,
        state=TaskState.RUNNING,
        schedule_at=at,
        finalized_at=0,
        attempt_count=attempt,
        attempted_at=at,
        attempted_error=[],
        metadata=dict(event.metadata),
        created_at=at,
        updated_at=at,
    )
    return RecordedMessage(event, task)
