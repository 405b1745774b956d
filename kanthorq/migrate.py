"""Apply and revert the versioned migrations in ``sql/migrations``.

Each migration runs in its own transaction while the session holds an advisory lock, so
processes that start together apply it once. Applied versions are kept in
``kanthorq_migration``.
"""

from __future__ import annotations

import logging

from kanthorq.database import Conn
from kanthorq.sqlfiles import Migration, migrations

logger = logging.getLogger(__name__)

# pg_advisory_lock key: the ASCII of "KQmigrat" as a signed bigint
LOCK_KEY = 0x4B51_6D69_6772_6174 - (1 << 63)

_STATE_TABLE = """
CREATE TABLE IF NOT EXISTS kanthorq_migration (
    version    INT          NOT NULL PRIMARY KEY,
    name       VARCHAR(256) NOT NULL,
    applied_at BIGINT       NOT NULL
)
"""


async def _applied(conn: Conn) -> set[int]:
    await conn.execute(_STATE_TABLE)
    rows = await conn.fetch("SELECT version FROM kanthorq_migration")
    return {row["version"] for row in rows}


async def up(conn: Conn) -> list[Migration]:
    """Apply every migration not applied yet; return those applied now."""
    done: list[Migration] = []
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        applied = await _applied(conn)
        for migration in migrations():
            if migration.version in applied:
                continue
            async with conn.transaction():
                await conn.execute(migration.up)
                await conn.execute(
                    "INSERT INTO kanthorq_migration (version, name, applied_at) "
                    "VALUES ($1, $2, (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT)",
                    migration.version,
                    migration.name,
                )
            logger.info("applied migration %04d_%s", migration.version, migration.name)
            done.append(migration)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    return done


async def down(conn: Conn, steps: int | None = 1) -> list[Migration]:
    """Revert the last ``steps`` applied migrations (all of them with None)."""
    done: list[Migration] = []
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        applied = await _applied(conn)
        todo = [m for m in reversed(migrations()) if m.version in applied]
        for migration in todo if steps is None else todo[:steps]:
            async with conn.transaction():
                await conn.execute(migration.down)
                await conn.execute(
                    "DELETE FROM kanthorq_migration WHERE version = $1", migration.version
                )
            logger.info("reverted migration %04d_%s", migration.version, migration.name)
            done.append(migration)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    return done


async def pending(conn: Conn) -> list[Migration]:
    """The migrations not applied yet, without applying them."""
    exists = await conn.fetchval("SELECT to_regclass('kanthorq_migration') IS NOT NULL")
    applied: set[int] = set()
    if exists:
        rows = await conn.fetch("SELECT version FROM kanthorq_migration")
        applied = {row["version"] for row in rows}
    return [m for m in migrations() if m.version not in applied]
