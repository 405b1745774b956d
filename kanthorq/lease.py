"""A lease: one holder at a time for a named job, without holding a session or a transaction.

A lease is a row of ``kanthorq_lease``: its name, its holder and when it expires (in
milliseconds, by the database's clock, ``kanthorq_now_ms()``). Taking, renewing and giving
it back are each one autocommit statement, so it works through a transaction pooler
(PgBouncer in transaction mode), where a session advisory lock and its unlock may run on
different server connections and the lock leaks. And no transaction stays open while the
job runs, which would hold back vacuum and the queue's conversion horizon. The holder
renews it every third of its time to live while it works; a holder that dies leaves a
lease that expires by itself.

The table comes from migration 0002; the statements from ``sql/queries/lease_*.sql``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable

import asyncpg

from kanthorq.ids import new_id
from kanthorq.sqlfiles import load

logger = logging.getLogger(__name__)


class Lease:
    """The lease ``name`` on ``pool``'s database, for ``ttl`` seconds at a time."""

    def __init__(self, pool: asyncpg.Pool, name: str, ttl: float) -> None:
        self._pool = pool
        self.name = name
        self.holder = new_id("lease")
        self._ttl_ms = int(ttl * 1000)
        self._ttl = ttl

    async def take(self) -> bool:
        """Take it when it is free, expired or already ours; whether we hold it now."""
        try:
            return await self._take()
        except asyncio.CancelledError:
            # the statement may have committed before the cancellation: give it back
            # rather than leave it to expire
            await asyncio.shield(self.give_back())
            raise

    async def _take(self) -> bool:
        taken = await self._pool.fetchval(load("lease_take"), self.name, self.holder, self._ttl_ms)
        return bool(taken)

    async def renew(self) -> bool:
        """Extend it by its time to live; False when it is no longer ours."""
        renewed = await self._pool.fetchval(
            load("lease_renew"), self.name, self.holder, self._ttl_ms
        )
        return bool(renewed)

    async def give_back(self) -> None:
        await self._pool.execute(load("lease_give_back"), self.name, self.holder)

    async def hold_while(self, work: Awaitable[None]) -> bool:
        """Run ``work`` (the lease taken) and renew the lease meanwhile; give it back after.
        Whether ``work`` finished while the lease was ours: when a renewal finds it taken
        over (it expired), ``work`` is cancelled and this returns False."""
        task = asyncio.ensure_future(work)
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=self._ttl / 3)
                if not task.done() and not await self.renew():
                    logger.warning(
                        "lease %s: expired and taken over while working; stopping",
                        self.name,
                        extra={"lease": self.name},
                    )
                    return False
            task.result()
            return True
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await asyncio.shield(self.give_back())
