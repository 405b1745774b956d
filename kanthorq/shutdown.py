"""A worker's graceful shutdown: wait for its running handlers, cancel the rest, and hand
their tasks back for another worker at once (not after the visibility timeout).

A handler that swallows cancellation still runs: handing its task back would run it twice
at once, so its task is left to return after its deadline.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from kanthorq.database import DB_ERRORS
from kanthorq.hooks import Hooks
from kanthorq.message import Message
from kanthorq.outcomes import error_record
from kanthorq.running import Handlers
from kanthorq.store import ConsumerQueries
from kanthorq.subscription import Subscription

logger = logging.getLogger(__name__)

CANCEL_GRACE = 5.0  # how long shutdown waits for cancelled handlers to unwind


def handlers_text(count: int) -> str:
    return f"{count} running handler" + ("" if count == 1 else "s")


async def drain(handlers: Handlers, timeout: float, consumer: str) -> list[Message]:
    """Wait up to ``timeout`` for the running handlers, then cancel the rest; the messages
    of those that unwound, whose tasks are to be handed back."""
    if handlers:
        logger.info(
            "consumer %s: waiting up to %.1fs for %s",
            consumer,
            timeout,
            handlers_text(len(handlers)),
        )
        await asyncio.wait(list(handlers), timeout=timeout)
    leftover = dict(handlers.items())
    for task in leftover:
        task.cancel()
    if not leftover:
        return []
    _, stuck = await asyncio.wait(list(leftover), timeout=CANCEL_GRACE)
    if stuck:
        logger.error(
            "consumer %s: %s ignored cancellation; their tasks are not handed back (events %s)",
            consumer,
            handlers_text(len(stuck)),
            ", ".join(leftover[t].task.event_id for t in stuck),
        )
    return [msg for task, msg in leftover.items() if task not in stuck]


async def hand_back(
    queries: ConsumerQueries,
    pool: asyncpg.Pool,
    hooks: Hooks,
    sub: Subscription,
    messages: list[Message],
) -> None:
    """Give the tasks of ``messages`` back (those not settled yet), without counting the
    interrupted attempt."""
    unsettled = [m for m in messages if m.settled is None or m.in_transaction]
    if not unsettled:
        return
    error = error_record(  # hand_back.sql puts each task's attempt into it
        0, RuntimeError("interrupted by a worker shutdown"), with_traceback=False
    )
    try:
        handed = await queries.hand_back(
            pool,
            [m.task.event_id for m in unsettled],
            [m.task.attempt_count for m in unsettled],
            error,
        )
    except DB_ERRORS as exc:
        hooks.db_error("hand_back", exc)
        logger.warning(
            "consumer %s: could not hand back %d tasks (they return after the visibility "
            "timeout): %s: %s",
            sub.name,
            len(unsettled),
            type(exc).__name__,
            exc,
        )
        return
    hooks.handed_back(sub, len(handed))
    logger.info("consumer %s: handed back %d running tasks", sub.name, len(handed))
