"""pgqueuer through its documented API: ``Queries.install()`` (what ``pgq install`` runs),
``Queries.enqueue`` with lists (its batch insert), and ``PgQueuer`` with an entrypoint and
``run(batch_size=10, max_concurrent_tasks=20)`` over one asyncpg connection, as its own
examples and benchmark tool do. A finished job is deleted from the ``pgqueuer`` table (and
logged), so the jobs left in that table are the ones not completed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, ClassVar

import asyncpg
import msgspec

from benchmarks.payload import ENTRYPOINT, encode
from benchmarks.systems.base import Body, OnBody, Publisher, System, WorkerOptions

BATCH_SIZE = 10  # pgqueuer's default; max_concurrent_tasks must be at least twice it


class PgqueuerPublisher:
    def __init__(self, queries: Any, closer: Callable[[], Any]) -> None:
        self.queries = queries
        self._closer = closer

    def prepare(self, batch: list[Body]) -> Any:
        return batch

    async def many(self, prepared: Any) -> None:
        n = len(prepared)
        await self.queries.enqueue([ENTRYPOINT] * n, [encode(b) for b in prepared], [0] * n)

    async def one(self, body: Body) -> None:
        await self.queries.enqueue(ENTRYPOINT, encode(body))

    async def close(self) -> None:
        await self._closer()


class Pgqueuer(System):
    name: ClassVar[str] = "pgqueuer"
    workloads: ClassVar[frozenset[str]] = frozenset({"W1", "W2", "W3", "W5"})

    async def install(self, dsn: str) -> None:
        from pgqueuer.db import AsyncpgDriver
        from pgqueuer.queries import Queries

        conn = await asyncpg.connect(dsn)
        try:
            await Queries(AsyncpgDriver(conn)).install()
        finally:
            await conn.close()

    async def open_publisher(self, dsn: str, connections: int) -> Publisher:
        from pgqueuer.db import AsyncpgDriver, AsyncpgPoolDriver
        from pgqueuer.queries import Queries

        if connections == 1:
            conn = await asyncpg.connect(dsn)
            return PgqueuerPublisher(Queries(AsyncpgDriver(conn)), conn.close)
        pool = await asyncpg.create_pool(dsn, min_size=connections, max_size=connections)
        assert pool is not None
        return PgqueuerPublisher(Queries(AsyncpgPoolDriver(pool)), pool.close)

    async def completed(self, conn: asyncpg.Connection, expected: int) -> int:
        left = await conn.fetchval("SELECT count(*) FROM pgqueuer")
        return expected - int(left)

    async def serve(
        self, opts: WorkerOptions, ready: Callable[[], None], stop: asyncio.Event, on_body: OnBody
    ) -> None:
        from pgqueuer import PgQueuer
        from pgqueuer.models import Job

        conn = await asyncpg.connect(opts.dsn)
        pgq = PgQueuer.from_asyncpg_connection(conn)
        latency = opts.mode == "latency"

        @pgq.entrypoint(ENTRYPOINT)
        async def handler(job: Job) -> None:
            if latency and job.payload is not None:
                on_body(msgspec.json.decode(job.payload))

        ready()
        running = asyncio.create_task(
            pgq.run(batch_size=BATCH_SIZE, max_concurrent_tasks=opts.concurrency)
        )
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        pgq.shutdown.set()
        stopping.cancel()
        await running
        await conn.close()


SYSTEM = Pgqueuer()
