"""Retention applied by running workers: one worker at a time, under a lease.

``app.retain(...)`` registers a policy per stream; every app that runs workers tries to take
the lease (:mod:`kanthorq.lease`) every ``retention_interval`` seconds, and the one that gets
it deletes the stream's old events (only those every consumer is done with) and prunes its
consumers' old finalized tasks, in batches. The others skip that round. The lease is a row
with an expiry, renewed during the pass: not a session advisory lock, which leaks through a
transaction pooler, nor a transaction held open for the whole pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import asyncpg

from kanthorq.checks import is_seconds
from kanthorq.database import DB_ERRORS
from kanthorq.errors import ConfigError, UnknownConsumer, UnknownStream
from kanthorq.lease import Lease

if TYPE_CHECKING:
    from kanthorq.admin import Admin

logger = logging.getLogger(__name__)

LEASE = "kanthorq.retention"
LEASE_TTL = 60.0  # seconds; renewed every third of it during a pass


def seconds_of(value: float | timedelta | None, what: str) -> float | None:
    """A retention age in seconds, checked."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if not is_seconds(value):
        raise ConfigError(f"{what} must be a timedelta or seconds >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Keep a stream's events for ``events`` seconds and its consumers' finalized tasks for
    ``tasks`` seconds (None: keep them). ``force``: delete old events even when a consumer
    still needs them."""

    stream: str
    events: float | None
    tasks: float | None
    force: bool = False


class RetentionRunner:
    def __init__(
        self, admin: Admin, pool: asyncpg.Pool, policies: list[RetentionPolicy], interval: float
    ) -> None:
        self._admin = admin
        self._pool = pool
        self._policies = policies
        self._interval = interval
        self._lease = Lease(pool, LEASE, LEASE_TTL)
        self.passes = 0  # the passes this runner made while holding the lease

    async def run(self, stop: asyncio.Event) -> None:
        """A pass now, then one every interval, until ``stop``; a pass in progress at the stop
        is cancelled (each batch is its own transaction, so nothing is left half done)."""
        while not stop.is_set():
            work = asyncio.ensure_future(self.run_once())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not work.done():
                work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)

    async def run_once(self) -> bool:
        """One pass if no other worker is making one; whether this one did."""
        try:
            if not await self._lease.take():
                return False
            if not await self._lease.hold_while(self._apply()):
                return False
        except DB_ERRORS as exc:
            logger.warning(
                "retention: the pass failed, retrying next interval: %s: %s",
                type(exc).__name__,
                exc,
            )
            return False
        self.passes += 1
        logger.debug("retention: pass %d done", self.passes)
        return True

    async def _apply(self) -> None:
        for policy in self._policies:
            try:
                await self._apply_policy(policy)
            except (UnknownStream, UnknownConsumer) as exc:  # not created yet, or dropped
                logger.debug("retention: stream %s: %s", policy.stream, exc)

    async def _apply_policy(self, policy: RetentionPolicy) -> None:
        # the ages count back from the database's clock, which wrote the times they compare
        # with (finalized_at, created_at), never from this host's
        if policy.tasks is not None:
            for consumer in await self._admin.consumers(policy.stream):
                pruned = await self._admin.prune_tasks(
                    consumer.name, before=timedelta(seconds=policy.tasks)
                )
                if pruned.updated:
                    logger.info("retention: consumer %s: %s", consumer.name, pruned)
        if policy.events is not None:
            deleted = await self._admin.delete_events(
                policy.stream, before=timedelta(seconds=policy.events), force=policy.force
            )
            if deleted.updated:
                logger.info("retention: stream %s: %s", policy.stream, deleted)
