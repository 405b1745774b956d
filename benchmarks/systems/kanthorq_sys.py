"""kanthorq through its public API: ``App.publish_many`` / ``App.publish``,
``@app.subscribe`` and ``app.run()``.

Two private calls prepare what a long-running deployment has already made before the clock
starts, as the peers' schema installers do: the stream (``Registry.stream``) and the
consumers' task tables (``Registry.consumer``). ``run()`` registers its consumers again
at start (an upsert and a catalog look-up), inside the clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, ClassVar

import asyncpg

import kanthorq
from benchmarks.payload import SUBJECT
from benchmarks.systems.base import Body, OnBody, Publisher, System, WorkerOptions

CONSUMER = "bench"


def consumer_names(count: int) -> list[str]:
    return [f"{CONSUMER}{i}" for i in range(count)]


async def prepare_app(app: kanthorq.App) -> None:
    """Create the app's stream and its consumers' task tables (the app must be open)."""
    registry = app._registry  # the one-time DDL, done before the clock (see above)
    assert registry is not None
    await registry.stream(app.stream)
    for sub in app.subscriptions.values():
        await registry.consumer(sub.spec())


def subscribe_all(app: kanthorq.App, opts: WorkerOptions, on_body: OnBody) -> None:
    if opts.mode == "latency":

        async def handler(msg: kanthorq.Message) -> None:
            on_body(msg.json())

    else:

        async def handler(msg: kanthorq.Message) -> None:
            return None

    for n, name in enumerate(consumer_names(opts.consumers)):
        stream = app.stream if opts.streams == 1 else f"s{n % opts.streams}"
        app.subscribe(SUBJECT, consumer=name, stream=stream, concurrency=opts.concurrency)(handler)


async def task_tables(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch("SELECT id FROM kanthorq_consumer_registry ORDER BY name")
    return [f'"kanthorq_{row["id"]}"' for row in rows]


async def stream_table(conn: asyncpg.Connection) -> str:
    stream_id = await conn.fetchval("SELECT id FROM kanthorq_stream_registry LIMIT 1")
    return f'"kanthorq_{stream_id}"'


class KanthorqPublisher:
    def __init__(self, app: kanthorq.App) -> None:
        self.app = app

    def prepare(self, batch: list[Body]) -> Any:
        return [(SUBJECT, body) for body in batch]

    async def many(self, prepared: Any) -> None:
        await self.app.publish_many(prepared)

    async def one(self, body: Body) -> None:
        await self.app.publish(SUBJECT, body)

    async def close(self) -> None:
        await self.app.close()


class Kanthorq(System):
    name: ClassVar[str] = "kanthorq"
    workloads: ClassVar[frozenset[str]] = frozenset({"W1", "W2", "W3", "W4", "W5", "W6"})

    async def install(self, dsn: str) -> None:
        async with kanthorq.App(dsn) as app:  # applies the migrations
            await prepare_app(app)

    async def open_publisher(self, dsn: str, connections: int) -> Publisher:
        app = kanthorq.App(dsn, pool_size=connections)
        await app.open()
        return KanthorqPublisher(app)

    async def completed(self, conn: asyncpg.Connection, expected: int) -> int:
        total = 0
        for table in await task_tables(conn):
            total += await conn.fetchval(f"SELECT count(*) FROM {table} WHERE state = 101")
        return int(total)

    def configure(self, app: kanthorq.App) -> None:
        """What a variant adds to the worker's app (see kanthorq_metrics.py)."""

    async def serve(
        self, opts: WorkerOptions, ready: Callable[[], None], stop: asyncio.Event, on_body: OnBody
    ) -> None:
        app = kanthorq.App(opts.dsn)
        subscribe_all(app, opts, on_body)
        self.configure(app)
        async with app:
            await prepare_app(app)
            ready()
            running = asyncio.create_task(app.run())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
            await app.shutdown()
            stopping.cancel()
            await running


SYSTEM = Kanthorq()
