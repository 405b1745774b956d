"""KanthorQ for Go's side of a shared database, as plain SQL.

Each statement does what the Go library does, as DESIGN.md section 2 describes it: its DDL
for the registry, stream and task tables; registration INSERTs that leave out ``kind``,
``created_at`` and ``updated_at``; a publish INSERT of ``(id, subject, body, metadata,
created_at)``; a consumer that starts its cursor at an id of its stream's ``created_at``,
scans ``id > cursor`` in id order, moves only ``cursor``, and copies each event's metadata
into its task; claims, completions, and error records ``{at, error, stack}``. Nothing here
calls kanthorq: it stands for another program sharing the database.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import asyncpg
from ulid import ULID

from kanthorq.subjects import matches

# Go's migration of the registry tables. The defaults are its own (now, in ms).
NOW_MS = "EXTRACT(EPOCH FROM CURRENT_TIMESTAMP) * 1000"
REGISTRY_DDL = f"""
CREATE TABLE IF NOT EXISTS kanthorq_stream_registry (
    id VARCHAR(64) NOT NULL,
    name VARCHAR(256) NOT NULL,
    created_at BIGINT NOT NULL DEFAULT {NOW_MS},
    updated_at BIGINT NOT NULL DEFAULT {NOW_MS},
    PRIMARY KEY (id),
    UNIQUE (name)
);
CREATE TABLE IF NOT EXISTS kanthorq_consumer_registry (
    stream_id VARCHAR(64) NOT NULL,
    stream_name VARCHAR(256) NOT NULL,
    id VARCHAR(64) NOT NULL,
    name VARCHAR(256) NOT NULL,
    kind SMALLINT NOT NULL DEFAULT 1,
    subject_includes VARCHAR(256) ARRAY NOT NULL,
    subject_excludes VARCHAR(256) ARRAY NOT NULL DEFAULT '{{}}',
    cursor VARCHAR(64) NOT NULL,
    attempt_max SMALLINT NOT NULL DEFAULT 16,
    visibility_timeout BIGINT NOT NULL DEFAULT 300000,
    created_at BIGINT NOT NULL DEFAULT {NOW_MS},
    updated_at BIGINT NOT NULL DEFAULT {NOW_MS},
    PRIMARY KEY (name),
    UNIQUE (id)
);
"""
# golang-migrate's bookkeeping table, which a Go service's migration leaves behind
BOOKKEEPING_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT NOT NULL PRIMARY KEY,
    dirty BOOLEAN NOT NULL
);
INSERT INTO schema_migrations VALUES (202410141701, false) ON CONFLICT DO NOTHING;
"""
STREAM_DDL = f"""
CREATE TABLE IF NOT EXISTS "kanthorq_{{id}}" (
    id VARCHAR(64) NOT NULL,
    subject VARCHAR(256) NOT NULL,
    body BYTEA NOT NULL,
    metadata JSONB NOT NULL DEFAULT '{{{{}}}}',
    created_at BIGINT NOT NULL DEFAULT {NOW_MS},
    PRIMARY KEY (id)
)
"""
TASKS_DDL = f"""
CREATE TABLE IF NOT EXISTS "kanthorq_{{id}}" (
    event_id VARCHAR(64) NOT NULL,
    subject VARCHAR(256) NOT NULL,
    state SMALLINT NOT NULL DEFAULT 1,
    schedule_at BIGINT NOT NULL DEFAULT {NOW_MS},
    finalized_at BIGINT NOT NULL DEFAULT 0,
    attempt_count SMALLINT NOT NULL DEFAULT 0,
    attempted_at BIGINT NOT NULL DEFAULT 0,
    attempted_error JSONB ARRAY NOT NULL DEFAULT '{{{{}}}}',
    metadata JSONB NOT NULL DEFAULT '{{{{}}}}',
    created_at BIGINT NOT NULL DEFAULT {NOW_MS},
    updated_at BIGINT NOT NULL DEFAULT {NOW_MS},
    PRIMARY KEY (event_id)
);
CREATE INDEX IF NOT EXISTS "idx_{{id}}_state_scheduling" ON "kanthorq_{{id}}" (state, schedule_at)
"""


def new_id(namespace: str, ms: int | None = None) -> str:
    """A Go-made id: the namespace and a lowercase ULID of ``ms`` (its own clock)."""
    ulid = ULID.from_timestamp(time.time_ns() // 1_000_000 if ms is None else ms)
    return f"{namespace}_{str(ulid).lower()}"


async def migrate(conn: asyncpg.Connection, *, bookkeeping: bool = True) -> None:
    await conn.execute(REGISTRY_DDL)
    if bookkeeping:
        await conn.execute(BOOKKEEPING_DDL)


@dataclass(frozen=True)
class GoStream:
    id: str
    name: str
    created_at: int

    @property
    def table(self) -> str:
        return f'"kanthorq_{self.id}"'


async def register_stream(conn: asyncpg.Connection, name: str) -> GoStream:
    row = await conn.fetchrow(
        "INSERT INTO kanthorq_stream_registry (id, name) VALUES ($1, $2) "
        f"ON CONFLICT (name) DO UPDATE SET updated_at = {NOW_MS} "
        "RETURNING id, name, created_at",
        new_id("stream"),
        name,
    )
    assert row is not None
    await conn.execute(STREAM_DDL.format(id=row["id"]))
    return GoStream(row["id"], row["name"], row["created_at"])


async def publish(
    conn: asyncpg.Connection,
    stream: GoStream,
    subject: str,
    body: bytes,
    metadata: dict[str, object] | None = None,
) -> str:
    event_id = new_id("event")
    await conn.execute(
        f"INSERT INTO {stream.table} (id, subject, body, metadata, created_at) "
        "VALUES ($1, $2, $3, $4, $5)",
        event_id,
        subject,
        body,
        json.dumps(metadata or {}),
        time.time_ns() // 1_000_000,
    )
    return event_id


@dataclass
class GoConsumer:
    """One Go consumer: registered, converting by id, claiming and completing tasks."""

    conn: asyncpg.Connection
    stream: GoStream
    id: str
    name: str
    includes: tuple[str, ...]
    excludes: tuple[str, ...]

    @property
    def table(self) -> str:
        return f'"kanthorq_{self.id}"'

    @classmethod
    async def register(
        cls,
        conn: asyncpg.Connection,
        stream: GoStream,
        name: str,
        includes: tuple[str, ...],
        excludes: tuple[str, ...] = (),
    ) -> GoConsumer:
        # its cursor starts at an id of the stream's created_at millisecond
        row = await conn.fetchrow(
            "INSERT INTO kanthorq_consumer_registry (stream_id, stream_name, id, name, "
            "subject_includes, subject_excludes, cursor, attempt_max, visibility_timeout) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, 16, 300000) "
            f"ON CONFLICT (name) DO UPDATE SET updated_at = {NOW_MS} RETURNING id",
            stream.id,
            stream.name,
            new_id("consumer"),
            name,
            list(includes),
            list(excludes),
            new_id("event", stream.created_at),
        )
        assert row is not None
        await conn.execute(TASKS_DDL.format(id=row["id"]))
        return cls(conn, stream, row["id"], name, includes, excludes)

    def _selects(self, subject: str) -> bool:
        return any(matches(p, subject) for p in self.includes) and not any(
            matches(p, subject) for p in self.excludes
        )

    async def convert(self, size: int = 100) -> int:
        """One conversion: the events after the cursor in id order, their tasks (with the
        event's metadata), and the cursor moved to the last one scanned. Returns how many
        events were scanned."""
        async with self.conn.transaction():
            row = await self.conn.fetchrow(
                "SELECT cursor FROM kanthorq_consumer_registry WHERE name = $1 "
                "FOR UPDATE SKIP LOCKED",
                self.name,
            )
            if row is None:
                return 0
            events = await self.conn.fetch(
                f"SELECT id, subject, metadata FROM {self.stream.table} "
                "WHERE id > $1 ORDER BY id LIMIT $2",
                row["cursor"],
                size,
            )
            chosen = [e for e in events if self._selects(e["subject"])]
            if chosen:
                await self.conn.execute(
                    f"INSERT INTO {self.table} (event_id, subject, state, metadata) "
                    "SELECT e.id, e.subject, 1, e.metadata "
                    "FROM unnest($1::TEXT[], $2::TEXT[], $3::JSONB[]) AS e(id, subject, metadata) "
                    "ON CONFLICT (event_id) DO NOTHING",
                    [e["id"] for e in chosen],
                    [e["subject"] for e in chosen],
                    [e["metadata"] for e in chosen],
                )
            if events:
                await self.conn.execute(
                    "UPDATE kanthorq_consumer_registry SET cursor = $2 WHERE name = $1",
                    self.name,
                    events[-1]["id"],
                )
            return len(events)

    async def convert_all(self) -> None:
        while await self.convert():
            pass

    async def pull(self, size: int = 100) -> list[str]:
        """Claim available tasks, as Go's state transition does."""
        rows = await self.conn.fetch(
            f"""
            WITH locked AS (
                SELECT event_id FROM {self.table}
                WHERE state = 1 AND schedule_at < {NOW_MS} + 1
                ORDER BY state, schedule_at
                LIMIT $1
                FOR UPDATE SKIP LOCKED
            )
            UPDATE {self.table} AS t
            SET state = 2, attempt_count = attempt_count + 1, attempted_at = {NOW_MS}
            FROM locked WHERE t.event_id = locked.event_id
            RETURNING t.event_id
            """,
            size,
        )
        return [r["event_id"] for r in rows]

    async def complete(self, event_ids: list[str]) -> int:
        status = await self.conn.execute(
            f"UPDATE {self.table} SET state = 101, finalized_at = {NOW_MS} "
            "WHERE event_id = ANY($1::TEXT[]) AND state = 2",
            event_ids,
        )
        return int(status.split()[-1])

    async def fail(self, event_id: str, error: str, stack: str) -> None:
        """A failed attempt, recorded as Go records it: ``{at, error, stack}``."""
        record = json.dumps({"at": time.time_ns() // 1_000_000, "error": error, "stack": stack})
        await self.conn.execute(
            f"UPDATE {self.table} SET state = 102, "
            "attempted_error = array_append(attempted_error, $2::JSONB) "
            "WHERE event_id = $1 AND state = 2",
            event_id,
            record,
        )

    async def run_all(self) -> list[str]:
        """Convert, claim and complete until nothing is left; the events it completed."""
        done: list[str] = []
        await self.convert_all()
        while claimed := await self.pull():
            await self.complete(claimed)
            done += claimed
        return done
