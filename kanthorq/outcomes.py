"""What becomes of a claimed task: completed, retried, discarded or cancelled.

Every transition is fenced on the attempt the claim counted, so a worker that lost its
task (rescued after the visibility timeout) changes nothing. Errors are recorded on the
task in a form jsonb can always hold, and every failed attempt is logged: a WARNING for one
that will be retried, an ERROR with the traceback for a discard, each with its fields as
``extra=`` attributes (consumer, stream, subject, event_id, attempt, attempt_max, error_type,
error_message, and retry_in_s / retry_at). The hooks (:mod:`kanthorq.hooks`) hear each
outcome once it is written.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from kanthorq.completer import Completer
from kanthorq.connections import AnyConn, driver_connection
from kanthorq.database import DB_ERRORS, Conn
from kanthorq.errors import Retry, StaleTask, UndecodableBody
from kanthorq.hooks import Hooks, Settlement
from kanthorq.message import Message, Outcome
from kanthorq.policies import delay_for
from kanthorq.store import ConsumerQueries
from kanthorq.subscription import Subscription

logger = logging.getLogger(__name__)

FALLBACK_DELAY = 60.0  # the retry delay when the consumer's backoff policy itself fails
RECORD_RETRY_MAX = 5.0  # the longest wait between tries to record a failure


def _storable(text: str) -> str:
    """Text that jsonb can hold: no NUL, no lone surrogate (both are escaped instead)."""
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # an exception whose __str__ fails still gets recorded
        return "<unprintable>"


def attempts(count: int) -> str:
    return f"{count} attempt" + ("" if count == 1 else "s")


def error_record(attempt: int, exc: BaseException, *, with_traceback: bool = True) -> bytes:
    """One element of ``attempted_error``: which attempt, the error, its traceback. The
    statement that stores it adds when (``at``), by the database's clock."""
    message = _text(exc)
    record: dict[str, object] = {
        "attempt": attempt,
        "error": _storable(f"{type(exc).__name__}: {message}"),
    }
    if with_traceback:
        record["traceback"] = _storable("".join(traceback.format_exception(exc)))
    return msgspec.json.encode(record)


class Outcomes:
    """Applies outcomes for one consumer; a :class:`Message`'s settler."""

    def __init__(
        self,
        sub: Subscription,
        queries: ConsumerQueries,
        pool: asyncpg.Pool,
        completer: Completer,
        retry_at: Callable[[float], None],
        extended: Callable[[Message, float], None],
        hooks: Hooks | None = None,
    ) -> None:
        self._sub = sub
        self._queries = queries
        self._pool = pool
        self._completer = completer
        self._retry_at = retry_at  # told how soon a retried task is due (seconds)
        self._extended = extended  # told that a running task's deadline moved (seconds)
        self._hooks = Hooks() if hooks is None else hooks
        # returned handlers' completions, until the completer's flush confirms them
        self._confirming: dict[tuple[str, int], Message] = {}
        completer.on_flush = self._flushed

    def fields(self, msg: Message, exc: BaseException | None = None) -> dict[str, Any]:
        """The ``extra=`` attributes of a log record about ``msg`` (and ``exc``)."""
        fields: dict[str, Any] = {
            "consumer": self._sub.name,
            "stream": self._sub.stream,
            "subject": msg.task.subject,
            "event_id": msg.task.event_id,
            "attempt": msg.task.attempts_used,
            "attempt_max": self._sub.attempt_max,
        }
        if exc is not None:
            fields["error_type"] = type(exc).__name__
            fields["error_message"] = _text(exc)
        return fields

    def _settled(self, msg: Message, outcome: Settlement, exc: BaseException | None) -> None:
        if self._hooks.settling:
            self._hooks.settled(self._sub, msg, outcome, exc)

    def _flushed(self, batch: Collection[tuple[str, int]], changed: set[tuple[str, int]]) -> None:
        """A flush of batched completions came back: the hooks hear of those it changed."""
        if not self._confirming:
            return
        for key in batch:
            msg = self._confirming.pop(key, None)
            if msg is not None and key in changed:
                self._hooks.settled(self._sub, msg, "completed", None)

    def completed(self, msg: Message) -> None:
        """The handler returned: complete the task (batched), unless it settled it itself."""
        if msg.settled is None:
            msg.settled = Outcome.ACK
            self._completer.add(msg.task.event_id, msg.task.attempt_count)
            if self._hooks.settling:
                self._confirming[msg.task.event_id, msg.task.attempt_count] = msg

    async def failed(
        self, msg: Message, exc: BaseException, *, delay: float | None = None, discard: bool = False
    ) -> None:
        """The handler raised. A task it settled already keeps that outcome, unless it was
        settled in the handler's own transaction: that may have rolled back, and the fenced
        update below changes nothing if it did commit."""
        if msg.settled is not None and not msg.in_transaction:
            logger.info(
                "consumer %s: task %s raised after it was settled (%s): %s: %s",
                self._sub.name,
                msg.task.event_id,
                msg.settled.value,
                type(exc).__name__,
                _text(exc),
                extra=self.fields(msg, exc),
            )
            return
        msg.settled = Outcome.NACK
        # a body that did not decode never will: discard it without using up the retries
        discard = discard or isinstance(exc, UndecodableBody)
        await self._record_failure(msg, exc, delay=delay, discard=discard)

    async def _record_failure(
        self,
        msg: Message,
        exc: BaseException,
        *,
        delay: float | None = None,
        discard: bool = False,
        conn: Conn | None = None,
    ) -> bool:
        attempt = msg.task.attempt_count
        used = msg.task.attempts_used  # after a resume, the budget starts again
        discard = discard or used >= self._sub.attempt_max
        seconds = 0.0 if discard else self._retry_delay(used, delay)
        error = error_record(attempt, exc)
        if conn is not None:  # the caller's transaction: a database error is the caller's
            changed = await self._queries.fail(
                conn,
                msg.task.event_id,
                attempt,
                discard=discard,
                delay_ms=round(seconds * 1000),
                error=error,
            )
        else:
            written = await self._write_failure(msg, discard, round(seconds * 1000), error)
            if written is None:
                return False
            changed = written
        if not changed:
            logger.warning(
                "consumer %s: stale failure ignored for task %s attempt %d",
                self._sub.name,
                msg.task.event_id,
                attempt,
                extra=self.fields(msg, exc),
            )
        elif discard:
            self._settled(msg, "discarded", exc)
            await self.discarded(msg, exc)
        else:
            self._log_retry(msg, exc, seconds)
            self._settled(msg, "retried", exc)
            self._retry_at(seconds)
        return changed

    def _log_retry(self, msg: Message, exc: BaseException, seconds: float) -> None:
        at = datetime.fromtimestamp(time.time() + seconds, UTC)
        fields = self.fields(msg, exc)
        fields["retry_in_s"] = seconds
        fields["retry_at"] = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        logger.warning(
            "consumer %s: task %s (%s) failed on attempt %d of %d: %s: %s; it runs again in "
            "%ss (at %s)",
            self._sub.name,
            msg.task.event_id,
            msg.task.subject,
            fields["attempt"],
            self._sub.attempt_max,
            fields["error_type"],
            fields["error_message"],
            f"{seconds:.2f}".rstrip("0").rstrip("."),
            fields["retry_at"],
            extra=fields,
        )

    async def _write_failure(
        self, msg: Message, discard: bool, delay_ms: int, error: bytes
    ) -> bool | None:
        """Record a failure through the workers' pool. While the database cannot be reached
        (a restart, a failover) it is tried again with a capped backoff, for up to the
        visibility timeout: giving up at once would leave the task running until a rescue,
        as if its worker had died. None: it could not be written."""
        deadline = time.monotonic() + self._sub.visibility_timeout
        backoff = 0.1
        while True:
            try:
                return await self._queries.fail(
                    self._pool,
                    msg.task.event_id,
                    msg.task.attempt_count,
                    discard=discard,
                    delay_ms=delay_ms,
                    error=error,
                )
            except DB_ERRORS as db_exc:
                self._hooks.db_error("fail", db_exc)
                if time.monotonic() + backoff > deadline:
                    logger.warning(
                        "consumer %s: could not record the failure of %s: %s: %s",
                        self._sub.name,
                        msg.task.event_id,
                        type(db_exc).__name__,
                        db_exc,
                    )
                    return None
                logger.warning(
                    "consumer %s: could not record the failure of %s yet, retrying in %.1fs: "
                    "%s: %s",
                    self._sub.name,
                    msg.task.event_id,
                    backoff,
                    type(db_exc).__name__,
                    db_exc,
                )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RECORD_RETRY_MAX)

    def _retry_delay(self, attempt: int, asked: float | None) -> float:
        if asked is not None:
            return asked
        try:
            return delay_for(self._sub.backoff, attempt)
        except Exception:
            # a broken policy must not leave the task running until its visibility timeout
            logger.exception(
                "consumer %s: the backoff policy failed for attempt %d; retrying after %.0fs",
                self._sub.name,
                attempt,
                FALLBACK_DELAY,
            )
            return FALLBACK_DELAY

    async def discarded(self, msg: Message, exc: BaseException) -> None:
        """Log the discard (ERROR, with the traceback) and run the consumer's on_discard."""
        fields = self.fields(msg, exc)
        logger.error(
            "consumer %s: task %s (%s) discarded after %s (of %d): %s: %s",
            self._sub.name,
            msg.task.event_id,
            msg.task.subject,
            attempts(msg.task.attempts_used),
            self._sub.attempt_max,
            fields["error_type"],
            fields["error_message"],
            exc_info=exc,
            extra=fields,
        )
        if self._sub.on_discard is None:
            return
        try:
            await self._sub.on_discard(msg, exc)
        except Exception:
            logger.exception(
                "consumer %s: on_discard hook failed", self._sub.name, extra=self.fields(msg)
            )

    async def extend(self, msg: Message, seconds: float) -> bool:
        """Push the running attempt's deadline to ``seconds`` from now."""
        deadline = await self._queries.extend(
            self._pool, msg.task.event_id, msg.task.attempt_count, round(seconds * 1000)
        )
        if deadline is None:
            logger.warning(
                "consumer %s: stale extend ignored for task %s attempt %d",
                self._sub.name,
                msg.task.event_id,
                msg.task.attempt_count,
            )
            return False
        self._extended(msg, seconds)
        return True

    async def settle(
        self, msg: Message, outcome: Outcome, reason: str | None, given: AnyConn | None
    ) -> bool:
        """Explicit ack, nack or cancel from a handler (see :class:`Message`); ``given``: the
        caller's connection, asyncpg's or SQLAlchemy's."""
        conn = None if given is None else await driver_connection(given)
        if outcome is Outcome.NACK:
            changed = await self._record_failure(msg, Retry(reason=reason), conn=conn)
        elif outcome is Outcome.CANCEL:
            changed = await self._queries.cancel(
                conn or self._pool, msg.task.event_id, msg.task.attempt_count
            )
            if changed:
                self._settled(msg, "cancelled", None)
        else:
            changed = await self._ack(msg, conn)
        if not changed and outcome is not Outcome.NACK:  # a stale nack is logged already
            logger.warning(
                "consumer %s: stale %s ignored for task %s attempt %d",
                self._sub.name,
                outcome.value,
                msg.task.event_id,
                msg.task.attempt_count,
                extra=self.fields(msg),
            )
        if not changed and conn is not None:
            # the caller's transaction must not commit its writes for an attempt that lost
            # the task: raising rolls it back, so the writes happen once, by the new attempt
            raise StaleTask(
                f"task {msg.task.event_id} attempt {msg.task.attempt_count} is no longer "
                f"running (rescued after the visibility timeout, or settled already); "
                f"its {outcome.value} changed nothing: roll back this transaction"
            )
        return changed

    async def _ack(self, msg: Message, conn: Conn | None) -> bool:
        ids, counts = [msg.task.event_id], [msg.task.attempt_count]
        if conn is not None:  # heard now: the caller's transaction commits it (or not)
            changed = bool(await self._queries.complete(conn, ids, counts))
        else:
            changed = await self._completer.add(ids[0], counts[0])
        if changed:
            self._settled(msg, "completed", None)
        return changed
