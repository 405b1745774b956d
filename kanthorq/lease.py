"""A lease: one holder at a time for a named job, without holding a session or a transaction.

A lease is a row of ``kanthorq_lease``: its name, its holder and when it expires (in
milliseconds, by the database's clock, ``kanthorq_now_ms()``). Taking, renewing and giving
it back are each one autocommit statement, so it works through a transaction pooler
(PgBouncer in transaction mode), where a session advisory lock and its unlock may run on
different server connections and the lock leaks. And no transaction stays open while the
job runs, which would hold back vacuum and the queue's conversion horizon. The holder
renews it every third of its time to live while it works; a holder that dies leaves a
lease that expires by itself.

The table is made the first time a lease is taken (under a transaction-scoped advisory
lock, so concurrent first takers do not race), not by a migration: it is bookkeeping, like
``kanthorq_migration``, and needs no version.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable

import asyncpg

from kanthorq.ids import new_id

logger = logging.getLogger(__name__)

_TABLE = """
CREATE TABLE IF NOT EXISTS kanthorq_lease (
    name       VARCHAR(256) NOT NULL PRIMARY KEY,
    holder     VARCHAR(64)  NOT NULL,
    expires_at BIGINT       NOT NULL
)
"""
_CREATE_LOCK = "kanthorq.lease"
_TAKE = """
INSERT INTO kanthorq_lease AS l (name, holder, expires_at)
VALUES ($1, $2, kanthorq_now_ms() + $3)
ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
WHERE l.expires_at <= kanthorq_now_ms() OR l.holder = EXCLUDED.holder
RETURNING TRUE
"""
_RENEW = """
UPDATE kanthorq_lease SET expires_at = kanthorq_now_ms() + $3
WHERE name = $1 AND holder = $2
RETURNING TRUE
"""
_GIVE_BACK = "DELETE FROM kanthorq_lease WHERE name = $1 AND holder = $2"


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
        try:
            taken = await self._pool.fetchval(_TAKE, self.name, self.holder, self._ttl_ms)
        except asyncpg.UndefinedTableError:
            await self._create_table()
            taken = await self._pool.fetchval(_TAKE, self.name, self.holder, self._ttl_ms)
        return bool(taken)

    async def _create_table(self) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _CREATE_LOCK)
            await conn.execute(_TABLE)

    async def renew(self) -> bool:
        """Extend it by its time to live; False when it is no longer ours."""
        renewed = await self._pool.fetchval(_RENEW, self.name, self.holder, self._ttl_ms)
        return bool(renewed)

    async def give_back(self) -> None:
        await self._pool.execute(_GIVE_BACK, self.name, self.holder)

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
