"""The raw asyncpg floor: what the database gives when a client does the least.

- W1: ``COPY`` of the same rows (id, subject, JSON body, metadata, time) in the same
  batches into a table shaped like a kanthorq stream (primary key, ``txid`` and its index).
  The rows are built before the clock: the floor is the database's and asyncpg's work.
- W5: single-row ``INSERT``s of such rows, one per transaction, over plain connections
  (an asyncpg pool would add a reset query to every statement).
- W2: a claim-then-complete loop over 20 connections, in this process:
  ``UPDATE ... WHERE id IN (SELECT ... LIMIT 100 FOR UPDATE SKIP LOCKED) RETURNING``, then
  ``UPDATE ... WHERE id = ANY($1)``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

import asyncpg

from benchmarks.payload import SUBJECT, encode
from benchmarks.systems.base import Body, Publisher, System
from kanthorq.ids import new_id, now_ms

DDL = """
CREATE TABLE raw_events (
    id         VARCHAR(64)  NOT NULL PRIMARY KEY,
    subject    VARCHAR(256) NOT NULL,
    body       BYTEA,
    metadata   JSONB        NOT NULL DEFAULT '{}',
    created_at BIGINT       NOT NULL DEFAULT 0,
    txid       XID8         NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX raw_events_txid ON raw_events (txid, id);
CREATE TABLE raw_jobs (
    id    BIGSERIAL PRIMARY KEY,
    state SMALLINT  NOT NULL DEFAULT 1,
    body  BYTEA     NOT NULL
);
CREATE INDEX raw_jobs_ready ON raw_jobs (id) WHERE state = 1;
"""
COLUMNS = ("id", "subject", "body", "metadata", "created_at")
INSERT = (
    "INSERT INTO raw_events (id, subject, body, metadata, created_at) VALUES ($1, $2, $3, $4, $5)"
)
CLAIM = """
UPDATE raw_jobs SET state = 2
WHERE id IN (
    SELECT id FROM raw_jobs WHERE state = 1 ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED
)
RETURNING id, body
"""
COMPLETE = "UPDATE raw_jobs SET state = 101 WHERE id = ANY($1::BIGINT[])"


def row(body: Body) -> tuple[str, str, bytes, str, int]:
    return (new_id("event"), SUBJECT, encode(body), "{}", now_ms())


class RawPublisher:
    """Plain connections handed out from a queue: no pool, so no reset query on release."""

    def __init__(self, conns: list[asyncpg.Connection]) -> None:
        self.conns = conns
        self.free: asyncio.Queue[asyncpg.Connection] = asyncio.Queue()
        for conn in conns:
            self.free.put_nowait(conn)

    def prepare(self, batch: list[Body]) -> Any:
        return [row(body) for body in batch]

    async def many(self, prepared: Any) -> None:
        conn = await self.free.get()
        try:
            await conn.copy_records_to_table("raw_events", records=prepared, columns=COLUMNS)
        finally:
            self.free.put_nowait(conn)

    async def one(self, body: Body) -> None:
        conn = await self.free.get()
        try:
            await conn.execute(INSERT, *row(body))
        finally:
            self.free.put_nowait(conn)

    async def close(self) -> None:
        for conn in self.conns:
            await conn.close()


async def _claim_loop(conn: asyncpg.Connection) -> int:
    done = 0
    while True:
        rows = await conn.fetch(CLAIM)
        if not rows:
            return done
        await conn.execute(COMPLETE, [r["id"] for r in rows])
        done += len(rows)


class Raw(System):
    name: ClassVar[str] = "raw"
    has_worker: ClassVar[bool] = False
    workloads: ClassVar[frozenset[str]] = frozenset({"W1", "W2", "W5"})

    async def install(self, dsn: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(DDL)
        finally:
            await conn.close()

    async def open_publisher(self, dsn: str, connections: int) -> Publisher:
        return RawPublisher([await asyncpg.connect(dsn) for _ in range(connections)])

    async def completed(self, conn: asyncpg.Connection, expected: int) -> int:
        return int(await conn.fetchval("SELECT count(*) FROM raw_jobs WHERE state = 101"))

    async def seed_jobs(self, dsn: str, batches: list[list[Body]]) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            for batch in batches:
                records = [(encode(body),) for body in batch]
                await conn.copy_records_to_table("raw_jobs", records=records, columns=("body",))
        finally:
            await conn.close()

    async def drain(self, dsn: str, connections: int) -> tuple[int, float]:
        """Claim and complete every job over ``connections`` connections: (jobs, seconds)."""
        conns = [await asyncpg.connect(dsn) for _ in range(connections)]
        try:
            start = time.perf_counter()
            counts = await asyncio.gather(*(_claim_loop(c) for c in conns))
            return sum(counts), time.perf_counter() - start
        finally:
            for conn in conns:
                await conn.close()


SYSTEM = Raw()
