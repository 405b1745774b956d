"""What a failed publish tells its caller: whether the event may have been written.

The publisher reports every database failure as a :class:`~kanthorq.errors.PublishError`
with the driver's exception as its cause:

- :class:`~kanthorq.errors.NotPublished` (``may_be_written`` False) when it surely was
  not: no connection could be opened, the stream could not be looked up, the server
  refused the statement (an ERROR rolls the statement back), or the client refused it
  before sending; and always inside the caller's transaction (``conn=``), which commits
  nothing until the caller commits it.
- :class:`~kanthorq.errors.PublishOutcomeUnknown` (``may_be_written`` True) when the
  connection broke, or the server ended the session, while the INSERT or COPY was in
  flight: its commit may have happened before the reply was lost.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal, TypeAlias

import asyncpg

from kanthorq.errors import NotPublished, PublishError, PublishOutcomeUnknown

Step: TypeAlias = Literal["stream", "write", "notify"]

# Errors raised while a pool opened a connection, in the publish that is noting them.
_CONNECT_FAILURES: ContextVar[list[BaseException] | None] = ContextVar(
    "kanthorq_connect_failures", default=None
)


def note_connect_failure(exc: BaseException) -> None:
    """Called by the pools' connect hook: ``exc`` was raised while opening a connection."""
    failures = _CONNECT_FAILURES.get()
    if failures is not None:
        failures.append(exc)


@contextmanager
def noting_connect_failures() -> Iterator[list[BaseException]]:
    """The connect failures of the pooled acquisitions made inside."""
    failures: list[BaseException] = []
    token = _CONNECT_FAILURES.set(failures)
    try:
        yield failures
    finally:
        _CONNECT_FAILURES.reset(token)


def _refused(exc: BaseException) -> bool:
    """The statement surely did not commit: a server ERROR (which rolls the statement and
    its autocommit transaction back) or an error the client raised before sending it. Not
    a lost connection (SQLSTATE class 08) or a FATAL that ended the session: a commit may
    precede those."""
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = str(getattr(exc, "sqlstate", "") or "")
        severity = getattr(exc, "severity_en", None) or getattr(exc, "severity", None)
        return not sqlstate.startswith("08") and severity not in ("FATAL", "PANIC")
    return isinstance(exc, asyncpg.InterfaceError)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def publish_error(
    exc: BaseException, *, step: Step, connecting: bool, joined: bool
) -> PublishError:
    """The error to raise for ``exc``, raised at ``step``. ``connecting``: it was raised
    while a pool opened a connection; ``joined``: the write was in the caller's
    transaction."""
    if joined:
        return NotPublished(
            f"publishing in the caller's transaction failed ({_reason(exc)}); nothing of it "
            "commits until that transaction commits, and the transaction should be rolled "
            "back and retried"
        )
    if step == "stream" or connecting:
        return NotPublished(f"the event was not written: no connection or stream ({_reason(exc)})")
    if step == "notify":
        return PublishOutcomeUnknown(
            f"the event was written, but notifying its workers failed ({_reason(exc)})"
        )
    if _refused(exc):
        return NotPublished(f"the event was not written: the database refused it ({_reason(exc)})")
    return PublishOutcomeUnknown(
        "the connection failed while the event was being written, so it may have been "
        f"written ({_reason(exc)}); publishing it again may make a duplicate"
    )
