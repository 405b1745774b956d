from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg

import kanthorq
from tests.conftest import Running, task_states, wait_until


async def test_publish_then_handle(
    make_app: Callable[..., kanthorq.App],
    start_app: Callable[..., Awaitable[Running]],
    db: asyncpg.Connection,
) -> None:
    app = make_app()
    seen: list[str] = []

    @app.subscribe("order.*", consumer="email")
    async def email(msg: kanthorq.Message) -> None:
        seen.append(msg.event.subject)

    await start_app(app)
    await app.publish("order.created", {"id": 1})
    await wait_until(lambda: seen == ["order.created"])
    await wait_until(lambda: _completed(db))


async def _completed(db: asyncpg.Connection) -> bool:
    return await task_states(db, "email") == {kanthorq.TaskState.COMPLETED: 1}
