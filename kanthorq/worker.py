"""The worker of one consumer: convert events into tasks, claim, run handlers, settle.

It never claims more than its free handler slots, and asks nothing of the database while
idle. It wakes on notifications (``wake``), on its own timers (the next scheduled task, a
converter that was busy, a handler's deadline) and when the process's poll
(:mod:`kanthorq.poller`) finds something for it (``polled``): events no notification
announced, tasks that became runnable, tasks past their deadline to rescue. Database errors
are logged and retried with a capped backoff; the loop only ends on :meth:`stop`.
"""

from __future__ import annotations

import asyncio
import logging
import time

import anyio
import asyncpg

from kanthorq import shutdown
from kanthorq.completer import Completer
from kanthorq.database import DB_ERRORS
from kanthorq.entities import Event
from kanthorq.errors import Discard, Retry, VisibilityTimeout
from kanthorq.hooks import Hooks, failed_operation
from kanthorq.message import Message
from kanthorq.outcomes import Outcomes
from kanthorq.poller import Polled
from kanthorq.prefetch import Prefetch
from kanthorq.running import Handlers
from kanthorq.stalls import StallWatch
from kanthorq.store import Claimed, ConsumerQueries
from kanthorq.subscription import Subscription

logger = logging.getLogger(__name__)

CONVERT_BATCH = 1000
CLAIM_BATCH = 200
SOON = 0.02  # another converter held the consumer, or events wait for an older transaction
MAX_ERROR_BACKOFF = 5.0
STALL_POLLS = 3  # poll intervals of conversion held back before it is logged


class ConsumerWorker:
    def __init__(
        self,
        sub: Subscription,
        queries: ConsumerQueries,
        pool: asyncpg.Pool,
        *,
        poll_interval: float,
        shutdown_timeout: float,
        hooks: Hooks | None = None,
    ) -> None:
        self.sub = sub
        self.queries = queries
        self._pool = pool
        self._poll = poll_interval
        self._shutdown_timeout = shutdown_timeout
        self._hooks = Hooks() if hooks is None else hooks
        self._completer = Completer(queries, pool, hooks=self._hooks)
        self._handlers = Handlers(sub.name)
        self._prefetch = Prefetch(sub.concurrency, sub.visibility_timeout, limited=sub.limits.any)
        self._outcomes = Outcomes(
            sub,
            queries,
            pool,
            self._completer,
            lambda delay: self._soon(max(delay, SOON)),
            self._handlers.extended,
            self._hooks,
        )
        self._stalls = StallWatch(sub.name, after=max(STALL_POLLS * poll_interval, 1.0))
        self._vt_ms = round(sub.visibility_timeout * 1000)
        self._signal = asyncio.Event()  # wakes the loop's sleep: a step is due, or a timer moved
        self._woken = False  # a step is due now
        self._stopping = asyncio.Event()
        self._convert_due = True
        self._rescue_due = True  # a poll found running tasks past their deadline
        self._backlog = False  # the last conversion filled its batch: more events wait
        self._more = False
        self._runnable = 0  # about how many converted tasks wait to be claimed
        self._ahead: asyncio.Task[None] | None = None  # a conversion beside the claims
        self._next_timer = 0.0
        self.step_started: float | None = None  # time.monotonic() of the step under way
        self._error_backoff = 0.0
        self._waiting_streak = 0
        self._unregistered = False  # logged once: the consumer's registry row is gone

    # ---- signals from outside -------------------------------------------------------

    def wake(self) -> None:
        """New events may be in the stream (a notification, or the listener reconnected)."""
        self._convert_due = True
        self._woken = True
        self._signal.set()

    @property
    def name(self) -> str:
        return self.sub.name

    @property
    def stream_id(self) -> str:
        return self.queries.stream_id

    @property
    def consumer_id(self) -> str:
        return self.queries.consumer_id

    def polled(self, found: Polled) -> None:
        """What the process's poll found for this consumer: step when there is work."""
        self._hooks.polled(self.sub)
        self._convert_due |= found.convert
        self._rescue_due |= found.rescue
        if found.due_in_ms is not None and found.due_in_ms > 0:
            self._soon(found.due_in_ms / 1000)  # a scheduled task starts on time
        if found.convert or found.rescue or (found.due_in_ms is not None and found.due_in_ms <= 0):
            self._step_now()

    def stop(self) -> None:
        """Stop claiming; :meth:`run` then drains the running handlers and returns."""
        self._stopping.set()
        self._signal.set()

    # ---- the loop -------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    self.step_started = time.monotonic()
                    await self._step()
                    self._error_backoff = 0.0
                    self._hooks.stepped(self.sub)
                except DB_ERRORS as exc:
                    self._hooks.db_error(failed_operation(exc), exc)
                    self._error_backoff = min(max(self._error_backoff * 2, 0.1), MAX_ERROR_BACKOFF)
                    logger.warning(
                        "consumer %s: database error, retrying in %.1fs: %s: %s",
                        self.sub.name,
                        self._error_backoff,
                        type(exc).__name__,
                        exc,
                        extra={"consumer": self.sub.name},
                    )
                    # the timer does not come back before the backoff is over
                    self._next_timer = time.monotonic() + self._error_backoff
                    self._convert_due = True
                self.step_started = None
                await self._sleep()
        finally:
            with anyio.CancelScope(shield=True):  # cancelled or not, shut down gracefully
                await self._drain()

    async def _step(self) -> None:
        now = time.monotonic()
        if self._rescue_due:
            await self._rescue()
            self._rescue_due = False
        if now >= self._next_timer and self._next_timer:
            self._next_timer = 0.0
            self._convert_due = True
        check_at = self._handlers.check()  # cancel the handlers past their deadline
        if check_at is not None:
            self._soon(max(check_at - now, SOON))
        # New events (a wake-up, a poll, a timer) are converted at once. The rest of a
        # backlog is converted a batch at a time: beside the claims when half a batch of
        # runnable tasks is left, so the claims go on meanwhile; at once when they ran out (a
        # claim came back short). Claims never wait behind the conversion of a whole backlog.
        if self._ahead is None:
            if self._convert_due or (self._backlog and not self._more):
                self._convert_due = self._backlog = False
                await self._convert()
            elif self._backlog and self._runnable < CONVERT_BATCH // 2:
                self._backlog = False
                self._ahead = asyncio.get_running_loop().create_task(self._convert_ahead())
        await self._fill()

    async def _sleep(self) -> None:
        """Until woken, or the timer (without one: until woken)."""
        while not self._stopping.is_set() and not self._woken:
            timeout = self._next_timer - time.monotonic() if self._next_timer else None
            if timeout is not None and timeout <= 0:
                break
            self._signal.clear()
            try:
                await asyncio.wait_for(self._signal.wait(), timeout)
            except TimeoutError:
                break
        self._woken = False

    def _step_now(self) -> None:
        self._woken = True
        self._signal.set()

    def _soon(self, delay: float) -> None:
        at = time.monotonic() + delay
        if not self._next_timer or at < self._next_timer:
            self._next_timer = at
            self._signal.set()

    async def _rescue(self) -> None:
        retried, discarded = await self.queries.rescue(self._pool, self.sub.attempt_max)
        self._hooks.rescued(self.sub, retried, len(discarded))
        if retried or discarded:
            logger.warning(
                "consumer %s: %d tasks past their visibility timeout: %d to retry, %d discarded",
                self.sub.name,
                retried + len(discarded),
                retried,
                len(discarded),
            )
        if discarded and self.sub.on_discard is not None:
            error = VisibilityTimeout("the task ran past its deadline on its last attempt")
            for item in await self.queries.with_events(self._pool, discarded):
                await self._outcomes.discarded(self._message(item), error)

    async def _convert_ahead(self) -> None:
        """The backlog's next batch, converted while the claims go on; a failure is left to
        the next step's conversion (which backs off)."""
        try:
            await self._convert(claim=False)
        except DB_ERRORS as exc:
            logger.debug("consumer %s: conversion failed: %s", self.sub.name, exc)
            self._convert_due = True
        finally:
            self._ahead = None
            self._step_now()

    async def _convert(self, *, claim: bool = True) -> None:
        """One batch per step, so claims (and a shutdown) never wait behind a backlog."""
        free = 0 if self._stopping.is_set() else self.sub.concurrency - len(self._handlers)
        # a consumer with limits across workers claims only through claim.sql, its budget
        want = 0 if self.sub.limits.any or not claim else min(max(free, 0), CLAIM_BATCH)
        result = await self.queries.convert(self._pool, CONVERT_BATCH, want, self._vt_ms)
        if result.takeover:
            await self._take_over()
            return
        self._runnable += result.inserted - len(result.claimed)
        await self._stalls.update(result.waiting, self._pool)
        if await self._take(result.claimed) and result.claimed:
            # as after a claim: a full one means more tasks may be runnable, and a finished
            # handler then steps at once (a short one leaves it to the claim that follows)
            self._more = len(result.claimed) == want
        if not result.registered:
            if not self._unregistered:
                logger.error(
                    "consumer %s is no longer registered (dropped?); its worker converts nothing",
                    self.sub.name,
                )
            self._unregistered = True
        elif not result.locked:
            self._soon(SOON)  # another worker converts; look again shortly
        elif result.scanned == CONVERT_BATCH:
            self._backlog = True  # more to convert, once the runnable tasks run out
            self._step_now()
        else:
            # committed events wait behind an older transaction still running: look again
            # soon, backing off while that transaction stays open
            self._waiting_streak = self._waiting_streak + 1 if result.waiting else 0
            if result.waiting:
                self._soon(min(SOON * 2 ** min(self._waiting_streak, 10), self._poll))

    async def _take_over(self) -> None:
        """Another client (KanthorQ for Go) moved the cursor: take the consumer over from
        where it stands, then convert at once."""
        row = await self.queries.takeover(self._pool)
        if row is not None:
            logger.info(
                "consumer %s: taking over from another client at its cursor %s: events up "
                "to it were converted there and are not converted again",
                self.sub.name,
                row["cursor"],
                extra={"consumer": self.sub.name},
            )
        self._convert_due = True
        self._step_now()

    async def _fill(self) -> None:
        # the free slots, and as many more as may wait claimed (kanthorq/prefetch.py)
        room = self._prefetch.room(len(self._handlers))
        if room <= 0 or self._stopping.is_set():
            return
        want = min(room, CLAIM_BATCH)
        claimed = await self.queries.claim(self._pool, want, self._vt_ms)
        if not await self._take(claimed):
            return
        self._more = len(claimed) == want
        self._runnable = max(self._runnable - len(claimed), 0) if self._more else 0
        if self._more:
            if len(self._handlers) < self.sub.concurrency:
                self._step_now()
            return
        if self._backlog:  # the runnable tasks ran out: convert the next batch now
            self._step_now()
            return
        due_in_ms = await self.queries.next_due(self._pool)
        if due_in_ms is not None:
            self._soon(max(due_in_ms / 1000, SOON))

    async def _take(self, claimed: list[Claimed]) -> bool:
        """Start the handlers of claimed tasks; when the worker stopped while the claim was
        on its way, give them back instead (False)."""
        if self._stopping.is_set():
            if claimed:
                await self._hand_back([self._message(c) for c in claimed])
            return False
        self._hooks.claimed(self.sub, len(claimed))
        free = max(self.sub.concurrency - len(self._handlers), 0)
        for item in claimed[:free]:
            self._start(item)
        self._prefetch.put(claimed[free:])  # claimed ahead: started as slots free up
        return True

    def _start(self, item: Claimed, waited: float = 0.0) -> None:
        msg = self._message(item)
        work = self._hooks.attempt(self.sub, msg, self._execute(item, msg))
        task = asyncio.get_running_loop().create_task(work)
        self._handlers.add(task, msg, self.sub.visibility_timeout - waited)
        task.add_done_callback(self._done)

    def _message(self, item: Claimed) -> Message:
        return Message(_event(item), item.task, self._outcomes)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._prefetch.handler_took(self._handlers.discard(task))
        waiting = None if self._stopping.is_set() else self._prefetch.pop()
        if waiting is not None:
            self._start(*waiting)
        if self._more and self._prefetch.low():
            self._step_now()
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "consumer %s: handler wrapper failed", self.sub.name, exc_info=task.exception()
            )

    # ---- running one handler --------------------------------------------------------

    async def _execute(self, item: Claimed, msg: Message) -> None:
        try:
            if item.event is None:
                raise Discard("the event of this task no longer exists in its stream")
            arg = msg if self.sub.decode_as is None else msg.decode(self.sub.decode_as)
            await self.sub.handler(arg)
        except Retry as exc:
            await self._outcomes.failed(msg, exc, delay=exc.delay)
        except Discard as exc:
            await self._outcomes.failed(msg, exc, discard=True)
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if self._handlers.timed_out(task):  # it ran past its deadline: a failed attempt
                assert task is not None
                task.uncancel()
                await self._outcomes.failed(
                    msg, VisibilityTimeout("the handler ran past its task's deadline")
                )
                return
            if task is not None and task.cancelling():
                raise  # the worker cancelled it (shutdown): it is handed back
            await self._outcomes.failed(msg, exc)  # the handler's own code raised it
        except Exception as exc:
            await self._outcomes.failed(msg, exc)
        else:
            self._outcomes.completed(msg)

    # ---- shutdown -------------------------------------------------------------------

    async def _drain(self) -> None:
        if self._ahead is not None:  # one statement: let it finish
            await asyncio.wait({self._ahead})
        # what was claimed ahead never started: it goes back at once
        await self._hand_back([self._message(c) for c in self._prefetch.take_all()])
        unwound = await shutdown.drain(self._handlers, self._shutdown_timeout, self.sub.name)
        await self._hand_back(unwound)
        await self._completer.close()

    async def _hand_back(self, messages: list[Message]) -> None:
        await shutdown.hand_back(self.queries, self._pool, self._hooks, self.sub, messages)


def _event(item: Claimed) -> Event:
    """The claimed task's event, or a stand-in with an empty body when it was deleted."""
    if item.event is not None:
        return item.event
    return Event(id=item.task.event_id, subject=item.task.subject, body=b"")
