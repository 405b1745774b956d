"""Opening an app: nested and concurrent opens share one pool."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

import kanthorq
from kanthorq import app as app_module


async def test_concurrent_opens_share_one_pool(
    make_app: Callable[..., kanthorq.App], monkeypatch: pytest.MonkeyPatch
) -> None:
    created: list[Any] = []
    real_create_pool = app_module.create_pool

    async def counting_create_pool(*args: Any, **kwargs: Any) -> Any:
        pool = await real_create_pool(*args, **kwargs)
        created.append(pool)
        return pool

    monkeypatch.setattr(app_module, "create_pool", counting_create_pool)
    app = make_app()
    both_open = asyncio.Barrier(2)

    async def use() -> Any:
        async with app:
            await both_open.wait()
            return app.pool

    pools = await asyncio.gather(use(), use())
    assert len(created) == 1, "a second concurrent open made its own pool, and leaked one"
    assert pools[0] is pools[1] is created[0]
    assert created[0].is_closing()


async def test_shutdown_before_run_starts_is_not_lost(
    make_app: Callable[..., kanthorq.App],
) -> None:
    app = make_app()

    @app.subscribe("a", consumer="c")
    async def handler(msg: kanthorq.Message) -> None: ...

    await app.shutdown()
    await asyncio.wait_for(app.run(), 10)  # returns at once: the stop was asked for already
    with pytest.raises(kanthorq.KanthorQError):
        _ = app.pool  # closed again after run()


async def test_a_connection_borrowed_from_app_pool_is_reset_when_returned(
    make_app: Callable[..., kanthorq.App],
) -> None:
    """kanthorq's own statements skip asyncpg's session reset; a caller's borrowing does not."""
    async with make_app(pool_size=1) as app:
        async with app.pool.acquire() as conn:
            await conn.execute("SET application_name = 'borrowed'")
            await conn.execute("LISTEN kanthorq_test_channel")
            await conn.execute("SELECT pg_advisory_lock(42)")
        await app.publish("a.b")  # kanthorq's own use of the one connection in between
        async with app.pool.acquire() as conn:
            assert await conn.fetchval("SHOW application_name") != "borrowed"
            assert await conn.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0
            locks = await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                "AND pid = pg_backend_pid()"
            )
            assert locks == 0
