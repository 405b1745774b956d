"""procrastinate through its documented API: ``schema_manager.apply_schema_async()``,
``Task.batch_defer_async`` (its batch insert), ``Task.defer_async``, and
``App.run_worker_async(concurrency=20)``. It has no asyncpg connector: it runs on psycopg 3
with its own connection pool (psycopg_pool's default size for the worker). A finished job
stays in ``procrastinate_jobs`` with status ``succeeded``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, ClassVar

import asyncpg

from benchmarks.payload import ENTRYPOINT
from benchmarks.systems.base import Body, OnBody, Publisher, System, WorkerOptions


def make_app(dsn: str, on_body: OnBody | None = None, **pool: Any) -> Any:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn, **pool))

    @app.task(name=ENTRYPOINT)
    async def bench(**body: Any) -> None:
        if on_body is not None:
            on_body(body)

    return app


class ProcrastinatePublisher:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.task = app.tasks[ENTRYPOINT]

    def prepare(self, batch: list[Body]) -> Any:
        return batch

    async def many(self, prepared: Any) -> None:
        await self.task.batch_defer_async(*prepared)

    async def one(self, body: Body) -> None:
        await self.task.defer_async(**body)

    async def close(self) -> None:
        await self.app.close_async()


class Procrastinate(System):
    name: ClassVar[str] = "procrastinate"
    workloads: ClassVar[frozenset[str]] = frozenset({"W1", "W2", "W3", "W5"})

    async def install(self, dsn: str) -> None:
        app = make_app(dsn)
        async with app.open_async():
            await app.schema_manager.apply_schema_async()

    async def open_publisher(self, dsn: str, connections: int) -> Publisher:
        app = make_app(dsn, min_size=connections, max_size=connections)
        await app.open_async()
        return ProcrastinatePublisher(app)

    async def completed(self, conn: asyncpg.Connection, expected: int) -> int:
        done = await conn.fetchval(
            "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
        )
        return int(done)

    async def serve(
        self, opts: WorkerOptions, ready: Callable[[], None], stop: asyncio.Event, on_body: OnBody
    ) -> None:
        app = make_app(opts.dsn, on_body if opts.mode == "latency" else None)
        async with app.open_async():
            ready()
            running = asyncio.create_task(
                app.run_worker_async(concurrency=opts.concurrency, install_signal_handlers=False)
            )
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            running.cancel()  # procrastinate stops its worker gracefully on cancellation
            with contextlib.suppress(asyncio.CancelledError):
                await running


SYSTEM = Procrastinate()
