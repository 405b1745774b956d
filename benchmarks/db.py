"""The PostgreSQL server the benchmark uses, and a fresh database per measurement.

The server is ``--dsn``, else ``$KANTHORQ_BENCH_DSN``, else a local server on
``127.0.0.1:5432`` when it answers, else kanthorq's embedded server. Server settings are
never changed: every system runs at the server's own durability.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg

logger = logging.getLogger(__name__)

ENV_DSN = "KANTHORQ_BENCH_DSN"
LOCAL_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
PREFIX = "kqbench_"
_counter = itertools.count()


def with_database(dsn: str, database: str) -> str:
    """The same server, another database."""
    return urlunsplit(urlsplit(dsn)._replace(path="/" + database))


async def answers(dsn: str, timeout: float = 3.0) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
    await conn.close()
    return True


async def resolve_server(dsn: str | None) -> tuple[str, str]:
    """The server's DSN and where it came from."""
    if dsn:
        return dsn, "--dsn"
    env = os.environ.get(ENV_DSN)
    if env:
        return env, f"${ENV_DSN}"
    if await answers(LOCAL_DSN):
        return LOCAL_DSN, "local server"
    from kanthorq import embedded

    return await asyncio.to_thread(embedded.start), "embedded server"


async def server_facts(dsn: str) -> dict[str, str]:
    """The settings a reader needs to trust the numbers (read, never changed)."""
    conn = await asyncpg.connect(dsn)
    try:
        facts = {"version": str(await conn.fetchval("SHOW server_version"))}
        for name in ("fsync", "synchronous_commit", "shared_buffers", "max_connections"):
            facts[name] = str(await conn.fetchval(f"SHOW {name}"))
        return facts
    finally:
        await conn.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def drop_orphans(dsn: str) -> list[str]:
    """Drop benchmark databases left by runs whose process is gone (a crash, a kill)."""
    conn = await asyncpg.connect(dsn)
    dropped = []
    try:
        names = await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE $1", PREFIX + "%"
        )
        for (name,) in names:
            pid = name[len(PREFIX) :].split("_", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                dropped.append(name)
    finally:
        await conn.close()
    return dropped


@asynccontextmanager
async def fresh_database(server_dsn: str, label: str) -> AsyncIterator[str]:
    """A newly created, empty database (from template0), dropped on the way out."""
    name = f"{PREFIX}{os.getpid()}_{next(_counter)}_{label}"[:63]
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        try:
            yield with_database(server_dsn, name)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
