"""Migrations: idempotent, applied once under concurrency, reversible, and the same schema
whichever way a database got there. Each test makes its own unmigrated scratch database."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

import kanthorq
from kanthorq import migrate
from kanthorq.errors import SchemaNotReady
from kanthorq.sqlfiles import migrations
from kanthorq.store import ConsumerSpec
from kanthorq.testing.databases import scratch_database
from tests.conftest import registry, wait_until


@pytest.fixture
async def scratch(server_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    async with scratch_database(server_dsn) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            yield conn
        finally:
            await conn.close()


async def kanthorq_tables(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT tablename FROM pg_tables WHERE tablename LIKE 'kanthorq%' ORDER BY 1"
    )
    return [row["tablename"] for row in rows]


async def kanthorq_functions(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch("SELECT proname FROM pg_proc WHERE proname LIKE 'kanthorq%' ORDER BY 1")
    return [row["proname"] for row in rows]


async def schema(conn: asyncpg.Connection) -> dict[str, Any]:
    """What a client can see of the schema: columns, indexes, constraints, functions."""
    columns = await conn.fetch(
        """
        SELECT table_name, ordinal_position, column_name, data_type, character_maximum_length,
               is_nullable, column_default, udt_name
        FROM information_schema.columns
        WHERE table_schema = 'public' ORDER BY table_name, ordinal_position
        """
    )
    indexes = await conn.fetch(
        "SELECT tablename, indexname, indexdef FROM pg_indexes "
        "WHERE schemaname = 'public' ORDER BY 1, 2"
    )
    constraints = await conn.fetch(
        """
        SELECT c.conrelid::regclass::text AS tbl, c.conname, pg_get_constraintdef(c.oid) AS def
        FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
        WHERE n.nspname = 'public' ORDER BY 1, 2
        """
    )
    functions = await conn.fetch(
        """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args,
               pg_get_functiondef(p.oid) AS def
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' ORDER BY 1, 2
        """
    )
    return {
        "columns": [tuple(r) for r in columns],
        "indexes": [tuple(r) for r in indexes],
        "constraints": [tuple(r) for r in constraints],
        "functions": [tuple(r) for r in functions],
    }


def versions(applied: list[Any]) -> list[int]:
    return [m.version for m in applied]


ALL = [m.version for m in migrations()]


async def test_up_is_idempotent(scratch: asyncpg.Connection) -> None:
    assert versions(await migrate.pending(scratch)) == ALL
    assert await kanthorq_tables(scratch) == []  # pending() only looks
    assert versions(await migrate.up(scratch)) == ALL
    assert await migrate.pending(scratch) == []
    assert await migrate.up(scratch) == []
    assert await migrate.up(scratch) == []
    rows = await scratch.fetch("SELECT version, name, applied_at FROM kanthorq_migration")
    assert sorted(r["version"] for r in rows) == ALL
    assert all(r["applied_at"] > 1_600_000_000_000 for r in rows)  # milliseconds
    assert {"kanthorq_stream_registry", "kanthorq_consumer_registry"} <= set(
        await kanthorq_tables(scratch)
    )
    assert {"kanthorq_subject_regex", "kanthorq_now_ms"} <= set(await kanthorq_functions(scratch))


async def test_migration_sql_itself_is_rerunnable(scratch: asyncpg.Connection) -> None:
    """Every up and down file survives being run twice (a crash between a migration and its
    bookkeeping row must not wedge the next start)."""
    for migration in migrations():
        await scratch.execute(migration.up)
        await scratch.execute(migration.up)
    before = await schema(scratch)
    for migration in reversed(migrations()):
        await scratch.execute(migration.down)
        await scratch.execute(migration.down)
    assert await kanthorq_tables(scratch) == []
    for migration in migrations():
        await scratch.execute(migration.up)
    assert await schema(scratch) == before


async def test_concurrent_up_applies_once(server_dsn: str) -> None:
    async with scratch_database(server_dsn) as dsn:
        conns = await asyncio.gather(*(asyncpg.connect(dsn) for _ in range(8)))
        try:
            results = await asyncio.gather(*(migrate.up(c) for c in conns))
            applied = sorted(itertools.chain.from_iterable(versions(r) for r in results))
            assert applied == ALL  # each migration exactly once, by whichever got the lock
            assert await conns[0].fetchval("SELECT count(*) FROM kanthorq_migration") == len(ALL)
            # the advisory lock is released by everyone
            held = await conns[0].fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            )
            assert held == 0
        finally:
            await asyncio.gather(*(c.close() for c in conns))


async def test_concurrent_app_opens_migrate_once(server_dsn: str) -> None:
    async with scratch_database(server_dsn) as dsn:
        apps = [kanthorq.App(dsn, pool_size=1) for _ in range(6)]
        try:
            await asyncio.gather(*(app.open() for app in apps))
            ids = await asyncio.gather(
                *(app.publish("m.opened", {"n": n}) for n, app in enumerate(apps))
            )
        finally:
            await asyncio.gather(*(app.close() for app in apps))
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT count(*) FROM kanthorq_migration") == len(ALL)
            assert len(set(ids)) == len(apps)
        finally:
            await conn.close()


async def register_stream_and_consumer(dsn: str) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    assert pool is not None
    try:
        reg = registry(pool, dsn)
        await reg.stream("orders")
        await reg.consumer(
            ConsumerSpec(
                name="email",
                stream="orders",
                includes=("order.>",),
                excludes=(),
                attempt_max=4,
                visibility_timeout_ms=300_000,
            )
        )
        await reg.stream("audit")
    finally:
        await pool.close()


async def test_down_removes_everything_and_up_again_works(server_dsn: str) -> None:
    async with scratch_database(server_dsn) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate.up(conn)
            await register_stream_and_consumer(dsn)
            ids = [
                r["id"]
                for r in await conn.fetch(
                    "SELECT id FROM kanthorq_stream_registry UNION ALL "
                    "SELECT id FROM kanthorq_consumer_registry"
                )
            ]
            assert len(ids) == 3  # 2 streams, 1 consumer
            assert {f"kanthorq_{i}" for i in ids} <= set(await kanthorq_tables(conn))

            reverted = await migrate.down(conn, steps=None)
            assert versions(reverted) == list(reversed(ALL))
            # only the bookkeeping table stays, and it is empty
            assert await kanthorq_tables(conn) == ["kanthorq_migration"]
            assert await conn.fetchval("SELECT count(*) FROM kanthorq_migration") == 0
            assert await kanthorq_functions(conn) == []
            assert versions(await migrate.pending(conn)) == ALL
            assert await migrate.down(conn, steps=None) == []  # nothing left to revert

            assert versions(await migrate.up(conn)) == ALL
            async with kanthorq.App(dsn, migrate=False) as app:
                await app.publish("order.created", b"again", stream="orders")
            count = await conn.fetchval("SELECT count(*) FROM kanthorq_stream_registry")
            assert count == 1
        finally:
            await conn.close()


async def test_down_by_steps(scratch: asyncpg.Connection) -> None:
    await migrate.up(scratch)
    last = migrations()[-1]
    assert versions(await migrate.down(scratch)) == [last.version]
    assert versions(await migrate.pending(scratch)) == [last.version]
    assert versions(await migrate.up(scratch)) == [last.version]
    assert await migrate.down(scratch, steps=0) == []
    assert await migrate.pending(scratch) == []


async def test_up_down_up_has_the_schema_of_a_fresh_database(server_dsn: str) -> None:
    async with (
        scratch_database(server_dsn) as fresh_dsn,
        scratch_database(server_dsn) as cycled_dsn,
    ):
        fresh = await asyncpg.connect(fresh_dsn)
        cycled = await asyncpg.connect(cycled_dsn)
        try:
            await migrate.up(fresh)
            await migrate.up(cycled)
            await register_stream_and_consumer(cycled_dsn)
            await migrate.down(cycled, steps=None)
            await migrate.up(cycled)
            expected = await schema(fresh)
            assert expected["columns"]
            assert expected["functions"]
            assert await schema(cycled) == expected
        finally:
            await fresh.close()
            await cycled.close()


async def test_registry_tables_follow_the_storage_contract(scratch: asyncpg.Connection) -> None:
    await migrate.up(scratch)
    contract = {
        "kanthorq_stream_registry": ["id", "name", "created_at", "updated_at"],
        "kanthorq_consumer_registry": [
            "stream_id",
            "stream_name",
            "id",
            "name",
            "kind",
            "subject_includes",
            "subject_excludes",
            "cursor",
            "attempt_max",
            "visibility_timeout",
            "created_at",
            "updated_at",
        ],
    }
    for table, names in contract.items():
        rows = await scratch.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = $1 "
            "ORDER BY ordinal_position",
            table,
        )
        assert [r["column_name"] for r in rows][: len(names)] == names
    keys = await scratch.fetch(
        """
        SELECT c.conrelid::regclass::text AS tbl, c.contype::text AS contype,
               pg_get_constraintdef(c.oid) AS def
        FROM pg_constraint c WHERE c.conrelid::regclass::text LIKE 'kanthorq%registry'
        """
    )
    defs = {(r["tbl"], r["contype"], r["def"]) for r in keys}
    assert ("kanthorq_stream_registry", "u", "UNIQUE (name)") in defs
    assert ("kanthorq_consumer_registry", "p", "PRIMARY KEY (name)") in defs
    # a consumer written as KanthorQ for Go writes it: without kind, created_at, updated_at
    row = await scratch.fetchrow(
        "INSERT INTO kanthorq_consumer_registry (stream_id, stream_name, id, name, "
        "subject_includes, subject_excludes, cursor, attempt_max, visibility_timeout) "
        "VALUES ('stream_x', 'orders', 'consumer_x', 'go_consumer', '{order.>}', '{}', "
        "'event_x', 16, 300000) RETURNING kind, created_at, updated_at"
    )
    assert row is not None
    now = await scratch.fetchval("SELECT kanthorq_now_ms()")
    assert row["kind"] == 1
    assert now - 5000 < row["created_at"] <= now
    assert now - 5000 < row["updated_at"] <= now


async def test_app_without_migrate_creates_nothing(server_dsn: str) -> None:
    async with scratch_database(server_dsn) as dsn:
        app = kanthorq.App(dsn, migrate=False)
        with pytest.raises(SchemaNotReady, match="kanthorq migrate up"):
            await app.open()
        with pytest.raises(kanthorq.KanthorQError):
            _ = app.pool  # the failed open keeps nothing open
        conn = await asyncpg.connect(dsn)
        try:
            assert await kanthorq_tables(conn) == []
            assert await kanthorq_functions(conn) == []
        finally:
            await conn.close()
        # and with the default, opening migrates
        async with kanthorq.App(dsn):
            pass
        conn = await asyncpg.connect(dsn)
        try:
            assert versions(await migrate.pending(conn)) == []
        finally:
            await conn.close()


async def test_a_failing_migration_leaves_nothing_behind(server_dsn: str) -> None:
    """A migration that fails (here: a clashing function of another client) rolls back,
    releases the lock, and the app that ran it keeps no connection open."""
    async with scratch_database(server_dsn) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                "CREATE FUNCTION kanthorq_now_ms() RETURNS TEXT LANGUAGE sql AS $$ SELECT 'x' $$"
            )
            app = kanthorq.App(dsn, pool_size=3)
            with pytest.raises(asyncpg.PostgresError, match="return type"):
                await app.open()
            with pytest.raises(kanthorq.KanthorQError, match="not open"):
                await app.publish("a.b", b"x")
            # the app's connection is closed: its backend goes (it exits a moment after the
            # socket closes, so this waits for it rather than reading at once)
            await wait_until(
                lambda: conn.fetchval(
                    "SELECT count(*) = 0 FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ),
                timeout=5,
            )
            assert (
                await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
                == 0
            )
            assert await conn.fetchval("SELECT count(*) FROM kanthorq_migration") == 0
            assert await kanthorq_tables(conn) == ["kanthorq_migration"]  # the rest rolled back
            # once the clash is gone, the same app opens
            await conn.execute("DROP FUNCTION kanthorq_now_ms()")
            async with app:
                await app.publish("a.b", b"x")
        finally:
            await conn.close()
