"""Seed a large stream and time the inspection queries on it.

    python -m benchmarks.inspect_seed --dsn postgresql://postgres@127.0.0.1:5432/postgres \\
        --events 1000000

Creates a scratch database on the server (dropped at the end unless --keep), COPYs
``--events`` events into one stream (in transactions of --batch events, so the txid column
takes its default from each), and gives two consumers:

- ``email`` (``order.>`` except ``order.internal``) has converted 90% of the stream: its
  tasks are mostly completed, with some discarded, cancelled, retryable (with an error and
  its traceback), available (due now, or later), pending and running (some past their
  visibility timeout), and a lag of the rest;
- ``audit`` (``>``) has converted nothing: the whole stream is its lag.

After ``VACUUM ANALYZE`` (what autovacuum does to a table that grew), it times
``admin.show()``, ``admin.list_tasks`` (several filters) and ``admin.get_task``: the median of
5 runs each, and compares the estimated figures with exact counts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from ulid import ULID

import kanthorq
from kanthorq.admin import TaskFilter, state_name
from kanthorq.commands.show import render
from kanthorq.store import ConsumerSpec

SUBJECTS = (
    ("order.created", 50),
    ("order.paid", 20),
    ("user.created", 20),
    ("order.internal", 10),
)
SPAN_MS = 7 * 86_400_000  # the events' times spread over the last week
RUNS = 5

# the email consumer's tasks, by bucket of 10,000 (abs(hashtext(id)) % 10000)
STATES = """
CASE
    WHEN b < 9700 THEN 101      -- completed
    WHEN b < 9800 THEN -102     -- discarded
    WHEN b < 9830 THEN -101     -- cancelled
    WHEN b < 9880 THEN 102      -- retryable
    WHEN b < 9990 THEN 1        -- available
    WHEN b < 9995 THEN 0        -- pending
    ELSE 2                      -- running
END
"""
ERROR = (
    '{"at": %s, "attempt": 1, "error": "ValueError: payment gateway said no", '
    '"traceback": "Traceback (most recent call last):\\n  File \\"app.py\\", line 12, in '
    'handler\\n    raise ValueError(\\"payment gateway said no\\")\\nValueError: payment '
    'gateway said no\\n"}'
)


def with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + database))


def events(count: int, start_ms: int) -> Iterator[tuple[str, str, bytes, str, int]]:
    """``count`` events in time order: (id, subject, body, metadata, created_at)."""
    cycle = [subject for subject, weight in SUBJECTS for _ in range(weight)]
    for n in range(count):
        ms = start_ms + n * SPAN_MS // count
        event_id = "event_" + str(ULID.from_timestamp(ms / 1000)).lower()
        body = b'{"order_id": %d, "amount": %d}' % (n, n % 997)
        yield event_id, cycle[n % len(cycle)], body, "{}", ms


async def copy_events(conn: asyncpg.Connection, table: str, count: int, batch: int) -> None:
    """COPY the events, one transaction per batch: each takes its txid from the default."""
    now = await conn.fetchval("SELECT kanthorq_now_ms()")
    rows = events(count, now - SPAN_MS)
    columns = ["id", "subject", "body", "metadata", "created_at"]
    done = 0
    while done < count:
        chunk = [next(rows) for _ in range(min(batch, count - done))]
        await conn.copy_records_to_table(table, records=chunk, columns=columns)
        done += len(chunk)
        if done % (batch * 100) == 0 or done == count:
            print(f"  copied {done:,} events", flush=True)


async def make_tasks(conn: asyncpg.Connection, stream: str, tasks: str, cursor_at: int) -> None:
    """The email consumer's tasks for its matching events up to the ``cursor_at``-th event,
    and its cursor there."""
    last = await conn.fetchrow(
        f"SELECT id, txid::TEXT AS txid FROM {stream} ORDER BY txid, id OFFSET $1 LIMIT 1",
        cursor_at - 1,
    )
    await conn.execute(
        f"""
        INSERT INTO {tasks} (event_id, subject, state, schedule_at, finalized_at, attempt_count,
                             attempted_at, attempted_error, created_at, updated_at)
        SELECT e.id, e.subject, s.state,
               CASE WHEN s.state = 1 AND s.b % 2 = 0 THEN now + 600000
                    WHEN s.state = 102 THEN now + (s.b % 600) * 1000
                    ELSE e.created_at + 1000 END,
               CASE WHEN s.state < 0 OR s.state = 101 THEN e.created_at + 2000 ELSE 0 END,
               CASE WHEN s.state IN (0, 1) THEN 0 ELSE 1 END,
               CASE WHEN s.state = 2 THEN now - (s.b % 2) * 600000 - 1000
                    WHEN s.state IN (0, 1) THEN 0 ELSE e.created_at + 1500 END,
               CASE WHEN s.state IN (-102, 102)
                    THEN ARRAY[format($3, e.created_at + 1500)::JSONB] ELSE '{{}}' END,
               e.created_at + 500, e.created_at + 2000
        FROM {stream} AS e
        CROSS JOIN LATERAL (SELECT abs(hashtext(e.id)) % 10000 AS b) AS h
        CROSS JOIN LATERAL (SELECT h.b, {STATES} AS state) AS s
        CROSS JOIN (SELECT kanthorq_now_ms() AS now) AS n
        WHERE (e.txid, e.id) <= ($1::TEXT::XID8, $2)
          AND e.subject LIKE 'order.%' AND e.subject <> 'order.internal'
        """,
        last["txid"],
        last["id"],
        ERROR,
    )
    await conn.execute(
        "UPDATE kanthorq_consumer_registry SET cursor = $1, cursor_txid = $2::TEXT::XID8 "
        "WHERE name = 'email'",
        last["id"],
        last["txid"],
    )


async def median(action: Callable[[], Awaitable[Any]]) -> float:
    """The median of ``RUNS`` timings of ``action``, in milliseconds."""
    timings = []
    for _ in range(RUNS):
        started = time.perf_counter()
        await action()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


async def seed(app: kanthorq.App, count: int, batch: int) -> tuple[str, str]:
    """The stream and the two consumers; the quoted names of the stream and email's tasks."""
    registry = app._registry
    assert registry is not None
    email = await registry.consumer(
        ConsumerSpec("email", "bench", ("order.>",), ("order.internal",), 4, 30_000)
    )
    await registry.consumer(ConsumerSpec("audit", "bench", (">",), (), 4, 30_000))
    stream, tasks = f'"kanthorq_{email.stream_id}"', f'"kanthorq_{email.consumer_id}"'
    started = time.perf_counter()
    async with app.pool.acquire() as conn:
        await copy_events(conn, stream.strip('"'), count, batch)
        print(f"  COPY took {time.perf_counter() - started:.1f}s", flush=True)
        started = time.perf_counter()
        await make_tasks(conn, stream, tasks, count * 9 // 10)
        print(f"  tasks took {time.perf_counter() - started:.1f}s", flush=True)
        started = time.perf_counter()
        await conn.execute(f"VACUUM ANALYZE {stream}")
        await conn.execute(f"VACUUM ANALYZE {tasks}")
        print(f"  VACUUM ANALYZE took {time.perf_counter() - started:.1f}s", flush=True)
    return stream, tasks


async def exact_figures(app: kanthorq.App, stream: str, tasks: str) -> dict[str, Any]:
    """The figures show estimates, counted in full (slowly), to compare."""
    conn: Any = app.pool
    row = await conn.fetchrow(
        "SELECT cursor, cursor_txid::TEXT AS txid FROM kanthorq_consumer_registry "
        "WHERE name = 'email'"
    )
    states = await conn.fetch(f"SELECT state, count(*) AS n FROM {tasks} GROUP BY state")
    return {
        "events": await conn.fetchval(f"SELECT count(*) FROM {stream}"),
        "email lag": await conn.fetchval(
            f"SELECT count(*) FROM {stream} WHERE (txid, id) > ($1::TEXT::XID8, $2) "
            "AND subject LIKE 'order.%' AND subject <> 'order.internal'",
            row["txid"],
            row["cursor"],
        ),
        "audit lag": await conn.fetchval(f"SELECT count(*) FROM {stream}"),
        "email tasks": {state_name(r["state"]): r["n"] for r in states},
    }


async def measure(app: kanthorq.App, stream: str, tasks: str) -> None:
    admin = app.admin
    retryable = await app.pool.fetchval(
        f"SELECT event_id FROM {tasks} WHERE state = 102 ORDER BY event_id DESC LIMIT 1"
    )
    cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("show()", admin.show),
        ("list_tasks (newest 50)", lambda: admin.list_tasks("email")),
        (
            "list_tasks --state retryable",
            lambda: admin.list_tasks("email", TaskFilter.build(states="retryable")),
        ),
        (
            "list_tasks --state discarded --order due",
            lambda: admin.list_tasks("email", TaskFilter.build(states="discarded"), order="due"),
        ),
        (
            "list_tasks --state running --subject order.paid",
            lambda: admin.list_tasks(
                "email", TaskFilter.build(states="running", subject="order.paid")
            ),
        ),
        (
            "list_tasks --subject order.paid --older-than 3 days",
            lambda: admin.list_tasks(
                "email", TaskFilter.build(subject="order.paid", older_than=3 * 86400)
            ),
        ),
        (
            "list_tasks --subject order.paid --older-than 3 days --order oldest",
            lambda: admin.list_tasks(
                "email",
                TaskFilter.build(subject="order.paid", older_than=3 * 86400),
                order="oldest",
            ),
        ),
        ("get_task (retryable, with an error)", lambda: admin.get_task("email", retryable)),
    ]
    print(f"\ntimings (median of {RUNS} runs):")
    for name, action in cases:
        print(f"  {name:<66} {await median(action):9.1f} ms", flush=True)


async def main(args: argparse.Namespace) -> None:
    database = args.database or f"kq_inspect_{os.getpid()}"
    server = await asyncpg.connect(args.dsn)
    try:
        await server.execute(f'CREATE DATABASE "{database}"')
        print(f"scratch database {database}; seeding {args.events:,} events", flush=True)
        try:
            async with kanthorq.App(with_database(args.dsn, database), stream="bench") as app:
                stream, tasks = await seed(app, args.events, args.batch)
                await measure(app, stream, tasks)
                print("\nkanthorq show:\n" + render(await app.admin.show()))
                print("\nexact figures, counted in full (for comparison):")
                for name, value in (await exact_figures(app, stream, tasks)).items():
                    print(f"  {name}: {value}")
        finally:
            if not args.keep:
                await server.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
                print(f"dropped {database}")
    finally:
        await server.close()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.inspect_seed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dsn", required=True, help="a server DSN (its database is not used)")
    parser.add_argument("--events", type=int, default=1_000_000, help="default: %(default)s")
    parser.add_argument("--batch", type=int, default=10_000, help="events per COPY transaction")
    parser.add_argument("--database", help="the scratch database's name")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
