"""Apply and revert the versioned migrations in ``sql/migrations``.

Each migration runs in a transaction of its own that first takes a transaction-scoped
advisory lock (released by its COMMIT or ROLLBACK), then creates ``kanthorq_migration`` if
it is missing and reads which versions it holds. So processes that start together apply
each migration once, and nothing outlives a transaction: a transaction pooler (PgBouncer
in transaction mode), which may run each transaction on another server connection, can
neither split a lock from its unlock nor leave a lock behind.
"""

from __future__ import annotations

import logging

from kanthorq.database import Conn
from kanthorq.sqlfiles import Migration, migrations

logger = logging.getLogger(__name__)

# pg_advisory_xact_lock key: the ASCII of "KQmigrat" as a signed bigint
LOCK_KEY = 0x4B51_6D69_6772_6174 - (1 << 63)

_STATE_TABLE = """
CREATE TABLE IF NOT EXISTS kanthorq_migration (
    version    INT          NOT NULL PRIMARY KEY,
    name       VARCHAR(256) NOT NULL,
    applied_at BIGINT       NOT NULL
)
"""


async def _versions(conn: Conn) -> set[int]:
    rows = await conn.fetch("SELECT version FROM kanthorq_migration")
    return {row["version"] for row in rows}


async def _lock(conn: Conn) -> set[int]:
    """In the caller's transaction: wait for the migration lock, which the transaction
    holds until it ends; then the applied versions."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
    return await _versions(conn)


async def _state(conn: Conn) -> set[int]:
    """The applied versions, after creating the state table when it is missing. A
    transaction of its own, under the lock: two processes on a fresh database do not race
    to create it, and it stays when a migration fails."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        await conn.execute(_STATE_TABLE)
        return await _versions(conn)


async def up(conn: Conn) -> list[Migration]:
    """Apply every migration not applied yet; return those applied now."""
    done: list[Migration] = []
    applied = await _state(conn)
    for migration in migrations():
        if migration.version in applied:
            continue
        async with conn.transaction():
            if migration.version in await _lock(conn):
                continue  # another process applied it since
            await conn.execute(migration.up)
            await conn.execute(
                "INSERT INTO kanthorq_migration (version, name, applied_at) "
                "VALUES ($1, $2, (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT)",
                migration.version,
                migration.name,
            )
        logger.info("applied migration %04d_%s", migration.version, migration.name)
        done.append(migration)
    return done


async def down(conn: Conn, steps: int | None = 1) -> list[Migration]:
    """Revert the last ``steps`` applied migrations (all of them with None)."""
    done: list[Migration] = []
    await _state(conn)
    while steps is None or len(done) < steps:
        async with conn.transaction():
            applied = await _lock(conn)
            todo = [m for m in reversed(migrations()) if m.version in applied]
            if not todo:
                break
            migration = todo[0]
            await conn.execute(migration.down)
            await conn.execute(
                "DELETE FROM kanthorq_migration WHERE version = $1", migration.version
            )
        logger.info("reverted migration %04d_%s", migration.version, migration.name)
        done.append(migration)
    return done


async def pending(conn: Conn) -> list[Migration]:
    """The migrations not applied yet, without applying them."""
    exists = await conn.fetchval("SELECT to_regclass('kanthorq_migration') IS NOT NULL")
    applied: set[int] = set()
    if exists:
        applied = await _versions(conn)
    return [m for m in migrations() if m.version not in applied]
