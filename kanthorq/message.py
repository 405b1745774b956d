"""What a handler receives: the event, its task, and explicit acknowledgement."""

from __future__ import annotations

import enum
from typing import Any, Protocol, TypeVar

from kanthorq import bodies
from kanthorq.checks import is_seconds
from kanthorq.connections import AnyConn
from kanthorq.entities import Event, Task
from kanthorq.errors import MAX_DELAY, ConfigError

T = TypeVar("T")


class Outcome(enum.Enum):
    ACK = "ack"
    NACK = "nack"
    CANCEL = "cancel"


class Settler(Protocol):
    """The worker side of a message: applies an outcome, fenced on the claimed attempt."""

    async def settle(
        self, msg: Message, outcome: Outcome, reason: str | None, conn: AnyConn | None
    ) -> bool: ...

    async def extend(self, msg: Message, seconds: float) -> bool: ...


class Message:
    """One claimed task and its event, handed to a handler.

    ``ack``, ``nack`` and ``cancel`` are safe to call twice: only the first call acts. With
    ``conn=`` (an asyncpg connection in a transaction, or a SQLAlchemy ``AsyncConnection`` or
    ``AsyncSession`` on the asyncpg driver) the change joins that transaction, so
    the handler's own writes and the task's completion commit together. Each returns whether
    the task changed: False when the attempt is stale (the task was rescued meanwhile), and
    with ``conn=`` a stale attempt raises :class:`kanthorq.errors.StaleTask` instead, so the
    transaction rolls back and its writes are made once, by the attempt that holds the task.
    """

    __slots__ = ("_settler", "event", "in_transaction", "settled", "task")

    def __init__(self, event: Event, task: Task, settler: Settler) -> None:
        self.event = event
        self.task = task
        self.settled: Outcome | None = None
        self.in_transaction = False  # settled through the caller's connection
        self._settler = settler

    def __repr__(self) -> str:
        return (
            f"Message(event_id={self.event.id!r}, subject={self.event.subject!r}, "
            f"attempt={self.task.attempt_count})"
        )

    def json(self) -> Any:
        """The body decoded from JSON; :class:`kanthorq.errors.UndecodableBody` (the task
        is discarded) when it is not JSON."""
        return bodies.decode_any(self.event.body)

    def decode(self, type: type[T]) -> T:
        """The body decoded from JSON into ``type`` (a msgspec.Struct, a dataclass, an attrs
        class, a Pydantic model, ...); :class:`kanthorq.errors.UndecodableBody` (the task is
        discarded at once, since it would never decode) when it does not fit."""
        decoded: T = bodies.decode(self.event.body, type)
        return decoded

    async def _settle(self, outcome: Outcome, reason: str | None, conn: AnyConn | None) -> bool:
        if self.settled is not None:
            return False
        self.settled = outcome
        self.in_transaction = conn is not None
        return await self._settler.settle(self, outcome, reason, conn)

    async def ack(self, conn: AnyConn | None = None) -> bool:
        """Complete the task now, instead of when the handler returns."""
        return await self._settle(Outcome.ACK, None, conn)

    async def nack(self, reason: str = "nacked", conn: AnyConn | None = None) -> bool:
        """Fail this attempt: retry with the consumer's backoff, or discard when used up."""
        return await self._settle(Outcome.NACK, reason, conn)

    async def cancel(self, conn: AnyConn | None = None) -> bool:
        """Cancel the task: it will not run again unless a person resumes it."""
        return await self._settle(Outcome.CANCEL, None, conn)

    async def extend(self, seconds: float) -> bool:
        """A heartbeat for a long handler: the task is not rescued (and run again elsewhere)
        for at least ``seconds`` from now. Fenced like an ack: returns False, changing
        nothing, when the task was settled or this attempt lost it to a rescue; the handler
        should then stop, since another attempt may be running."""
        if not is_seconds(seconds, above_zero=True):
            raise ConfigError(
                f"extend(seconds) takes a number of seconds above 0 and up to {MAX_DELAY:g}, "
                f"got {seconds!r}"
            )
        if self.settled is not None:
            return False
        return await self._settler.extend(self, seconds)
