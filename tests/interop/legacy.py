"""A database as kanthorq 0.1 (before migration 0002) left it, with data in every state.

The registry comes from migration 0001 itself (kind VARCHAR 'primary', defaults 0); the
stream and task tables from that release's DDL, kept here as it was (body nullable, txid
with a volatile default, updated_at DEFAULT 0, no deadline_at).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from kanthorq.sqlfiles import migrations

STREAM_DDL_0_1 = """
CREATE TABLE "kanthorq_{id}" (
    id         VARCHAR(64)  NOT NULL PRIMARY KEY,
    subject    VARCHAR(256) NOT NULL,
    body       BYTEA,
    metadata   JSONB        NOT NULL DEFAULT '{{}}',
    created_at BIGINT       NOT NULL DEFAULT kanthorq_now_ms()
);
ALTER TABLE "kanthorq_{id}" ADD COLUMN txid XID8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX "kanthorq_{id}_txid" ON "kanthorq_{id}" (txid, id);
"""
TASKS_DDL_0_1 = """
CREATE TABLE "kanthorq_{id}" (
    event_id        VARCHAR(64)  NOT NULL PRIMARY KEY,
    subject         VARCHAR(256) NOT NULL,
    state           SMALLINT     NOT NULL DEFAULT 1,
    schedule_at     BIGINT       NOT NULL DEFAULT kanthorq_now_ms(),
    finalized_at    BIGINT       NOT NULL DEFAULT 0,
    attempt_count   SMALLINT     NOT NULL DEFAULT 0,
    attempted_at    BIGINT       NOT NULL DEFAULT 0,
    attempted_error JSONB[]      NOT NULL DEFAULT '{{}}',
    metadata        JSONB        NOT NULL DEFAULT '{{}}',
    created_at      BIGINT       NOT NULL DEFAULT kanthorq_now_ms(),
    updated_at      BIGINT       NOT NULL DEFAULT 0
);
CREATE INDEX "kanthorq_{id}_state" ON "kanthorq_{id}" (state, schedule_at, event_id);
CREATE INDEX "kanthorq_{id}_ready" ON "kanthorq_{id}" (schedule_at, event_id)
    WHERE state IN (1, 102);
CREATE INDEX "kanthorq_{id}_running" ON "kanthorq_{id}" (attempted_at) WHERE state = 2;
"""
STREAM_ID = "stream_01jaaaaaaaaaaaaaaaaaaaaaaa"
CONSUMERS = {  # name -> id
    "mailer": "consumer_01jbbbbbbbbbbbbbbbbbbbbbbb",
    "fresh": "consumer_01jcccccccccccccccccccccc0",
}
# the tasks of "mailer" by state: the events at these positions of the stream
STATES = {-102: 2, -101: 2, 0: 1, 1: 3, 2: 2, 101: 5, 102: 2}


@dataclass
class Legacy:
    events: list[str] = field(default_factory=list)  # the stream's events, in id order
    tasks: dict[str, int] = field(default_factory=dict)  # mailer's tasks: event id -> state


async def build(conn: asyncpg.Connection) -> Legacy:
    """Migration 0001 only, a stream of 24 events, a consumer that converted 17 of them (its
    tasks in every state) and one that never converted."""
    first = migrations()[0]
    assert first.version == 1
    await conn.execute(first.up)
    await conn.execute(
        "CREATE TABLE kanthorq_migration (version INT NOT NULL PRIMARY KEY, "
        "name VARCHAR(256) NOT NULL, applied_at BIGINT NOT NULL)"
    )
    await conn.execute("INSERT INTO kanthorq_migration VALUES (1, 'registry', 1)")
    created = await conn.fetchval("SELECT kanthorq_now_ms() - 60000")
    await conn.execute(
        "INSERT INTO kanthorq_stream_registry (id, name, created_at, updated_at) "
        "VALUES ($1, 'orders', $2, $2)",
        STREAM_ID,
        created,
    )
    await conn.execute(STREAM_DDL_0_1.format(id=STREAM_ID))
    legacy = Legacy()
    for n in range(24):  # one transaction each: the txids increase with the ids
        event_id = f"event_01jaaaaaaa{n + 1:016d}"
        legacy.events.append(event_id)
        await conn.execute(
            f'INSERT INTO "kanthorq_{STREAM_ID}" (id, subject, body, metadata, created_at) '
            "VALUES ($1, 'order.created', $2, '{}', $3)",
            event_id,
            b'{"n": %d}' % n,
            created + n,
        )
    converted = sum(STATES.values())
    last = legacy.events[converted - 1]
    last_txid = await conn.fetchval(
        f'SELECT txid::TEXT FROM "kanthorq_{STREAM_ID}" WHERE id = $1', last
    )
    for name, consumer_id in CONSUMERS.items():
        # mailer converted 17 events; fresh never converted: its cursor is still the first
        # id of its stream's millisecond, as 0.1 registered it
        start = "event_01jaaaaaaa" + "0" * 16
        cursor, txid = (last, last_txid) if name == "mailer" else (start, "0")
        await conn.execute(
            "INSERT INTO kanthorq_consumer_registry (stream_id, stream_name, id, name, kind, "
            "subject_includes, cursor, cursor_txid, attempt_max, visibility_timeout, "
            "created_at, updated_at) VALUES ($1, 'orders', $2, $3, 'primary', '{order.>}', "
            "$4, $5::TEXT::XID8, 4, 30000, $6, $6)",
            STREAM_ID,
            consumer_id,
            name,
            cursor,
            txid,
            created,
        )
        await conn.execute(TASKS_DDL_0_1.format(id=consumer_id))
    at = 0
    for state, count in STATES.items():
        for event_id in legacy.events[at : at + count]:
            legacy.tasks[event_id] = state
            await conn.execute(
                f'INSERT INTO "kanthorq_{CONSUMERS["mailer"]}" (event_id, subject, state, '
                "schedule_at, finalized_at, attempt_count, attempted_at, attempted_error, "
                "created_at, updated_at) VALUES ($1, 'order.created', $2::SMALLINT, $3::BIGINT, "
                "CASE WHEN $2::SMALLINT IN (101, -101, -102) THEN $3::BIGINT ELSE 0 END, "
                "CASE WHEN $2::SMALLINT IN (0, 1) THEN 0 ELSE 1 END, "
                "CASE WHEN $2::SMALLINT IN (0, 1) THEN 0 ELSE $3::BIGINT END, "
                "CASE WHEN $2::SMALLINT IN (102, -102) "
                'THEN ARRAY[\'{"at": 1, "attempt": 1, "error": "E: x"}\'::JSONB] '
                "ELSE '{}' END, $3::BIGINT, $3::BIGINT)",
                event_id,
                state,
                created + 1000,
            )
        at += count
    return legacy
