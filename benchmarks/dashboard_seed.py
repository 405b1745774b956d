"""Seed a large stream for the dashboard, then time every page of it.

    python -m benchmarks.dashboard_seed seed --dsn postgresql://postgres@127.0.0.1:5432/postgres \\
        --events 10000000
    python -m benchmarks.dashboard_seed time --dsn postgresql://postgres@127.0.0.1:5432/postgres
    python -m benchmarks.dashboard_seed drop --dsn postgresql://postgres@127.0.0.1:5432/postgres

``seed`` creates the database ``--database`` (default ``kq_dash10m``) and fills one stream
(``bench``) straight in SQL: ``INSERT ... SELECT`` from ``generate_series``, one transaction
per ``--batch`` events (so the txid column takes its default from each), with ids that sort
by time as kanthorq's do. Its two consumers are those of :mod:`benchmarks.inspect_seed`:
``email`` has converted 90% of the stream in bulk (tasks in every state, errors with
tracebacks; some finalized within the last hour, for the chart), ``audit`` nothing.

``time`` requests every page of the dashboard (through its ASGI app, in process, with
httpx) and prints the median of ``--runs`` requests of each; ``drop`` drops the database.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import asyncpg

import kanthorq
from benchmarks.inspect_seed import make_tasks, with_database
from kanthorq.store import ConsumerSpec

SPAN_MS = 7 * 86_400_000  # the events' times spread over the last week
ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford's base32, lowercase, as kanthorq.ids


def _base32(value: str, chars: int) -> str:
    """SQL for the ``chars`` base32 characters of the BIGINT expression ``value``."""
    parts = [
        f"substr('{ALPHABET}', ((({value}) >> {5 * (chars - 1 - i)}) & 31)::INT + 1, 1)"
        for i in range(chars)
    ]
    return " || ".join(parts)


def insert_events(table: str) -> str:
    """Events $1 to $2 of $3, spread evenly from $4 (ms): an id of their millisecond (10
    characters) and their number (16), as a ULID, so ids sort by time."""
    ms = "($4::BIGINT + n * $5::BIGINT / $3::BIGINT)"
    return f"""
    INSERT INTO {table} (id, subject, body, metadata, created_at)
    SELECT 'event_' || {_base32(ms, 10)} || {_base32("n", 16)},
           (ARRAY['order.created', 'order.created', 'order.created', 'order.created',
                  'order.created', 'order.paid', 'order.paid', 'user.created',
                  'user.created', 'order.internal'])[n % 10 + 1],
           convert_to(format('{{"order_id": %s, "amount": %s}}', n, n % 997), 'UTF8'),
           '{{"source": "seed"}}'::JSONB,
           {ms}
    FROM generate_series($1::BIGINT, $2::BIGINT) AS n
    """


async def seed(args: argparse.Namespace) -> None:
    server = await asyncpg.connect(args.dsn)
    try:
        await server.execute(f'CREATE DATABASE "{args.database}"')
    finally:
        await server.close()
    print(f"database {args.database}; seeding {args.events:,} events", flush=True)
    async with kanthorq.App(with_database(args.dsn, args.database), stream="bench") as app:
        registry = app._registry
        assert registry is not None
        email = await registry.consumer(
            ConsumerSpec("email", "bench", ("order.>",), ("order.internal",), 4, 30_000)
        )
        await registry.consumer(ConsumerSpec("audit", "bench", (">",), (), 4, 30_000))
        stream, tasks = f'"kanthorq_{email.stream_id}"', f'"kanthorq_{email.consumer_id}"'
        async with app.pool.acquire() as conn:
            await conn.execute("SET synchronous_commit = off")
            now = await conn.fetchval("SELECT kanthorq_now_ms()")
            started = time.perf_counter()
            statement = insert_events(stream)
            for first in range(0, args.events, args.batch):
                last = min(first + args.batch, args.events) - 1
                await conn.execute(statement, first, last, args.events, now - SPAN_MS, SPAN_MS)
                print(f"  inserted {last + 1:,} events", flush=True)
            print(f"  events took {time.perf_counter() - started:.1f}s", flush=True)
            started = time.perf_counter()
            await make_tasks(conn, stream, tasks, args.events * 9 // 10)
            # the chart's hour: some tasks finalized and failed lately, a minute apart
            await conn.execute(
                f"""
                UPDATE {tasks}
                SET finalized_at = $1::BIGINT - (abs(hashtext(event_id)) % 3600) * 1000,
                    schedule_at = $1::BIGINT - (abs(hashtext(event_id)) % 3600) * 1000
                WHERE event_id IN (SELECT event_id FROM {tasks} WHERE state IN (101, -102)
                                   ORDER BY event_id DESC LIMIT 20000)
                """,
                now,
            )
            print(f"  tasks took {time.perf_counter() - started:.1f}s", flush=True)
            started = time.perf_counter()
            await conn.execute(f"VACUUM ANALYZE {stream}")
            await conn.execute(f"VACUUM ANALYZE {tasks}")
            print(f"  VACUUM ANALYZE took {time.perf_counter() - started:.1f}s", flush=True)


async def timings(args: argparse.Namespace) -> None:
    import httpx

    from kanthorq import dashboard

    async with kanthorq.App(with_database(args.dsn, args.database), migrate=False) as app:
        tasks = await app.admin.list_tasks(
            "email", kanthorq.admin.TaskFilter.build(states="retryable"), limit=1
        )
        failing = tasks[0].event_id
        newest = (await app.admin.list_tasks("email", limit=50))[-1].event_id
        web = dashboard.app(app, token="bench-token")
        transport = httpx.ASGITransport(app=web)
        pages = [
            ("overview", "/"),
            ("overview (refresh fragment)", "/fragments/overview"),
            ("consumer email", "/consumers/email"),
            ("consumer email, retryable", "/consumers/email?state=retryable"),
            ("consumer email, discarded, oldest", "/consumers/email?state=discarded&order=oldest"),
            (
                "consumer email, order.paid, older than 3d",
                "/consumers/email?subject=order.paid&age=3d",
            ),
            (
                "consumer email, order.paid, older than 3d, oldest",
                "/consumers/email?subject=order.paid&age=3d&order=oldest",
            ),
            ("consumer email, next page", f"/consumers/email?after={newest}"),
            (
                "consumer email, user.created (matches none)",
                "/consumers/email?subject=user.created",
            ),
            ("stream bench", "/streams/bench"),
            ("consumer email chart", "/fragments/chart/email"),
            ("consumer audit", "/consumers/audit"),
            ("task (retryable, with traceback)", f"/consumers/email/tasks/{failing}"),
            ("schedules", "/schedules"),
        ]
        headers = {"Authorization": "Bearer bench-token"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://dash", headers=headers
        ) as client:
            print(f"timings (median of {args.runs} requests, after one warm-up):")
            for name, path in pages:
                response = await client.get(path)
                assert response.status_code == 200, (path, response.status_code)
                measured = []
                for _ in range(args.runs):
                    started = time.perf_counter()
                    response = await client.get(path)
                    measured.append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200
                print(
                    f"  {name:<46} {statistics.median(measured):8.1f} ms"
                    f"  (max {max(measured):.1f})",
                    flush=True,
                )


async def drop(args: argparse.Namespace) -> None:
    server = await asyncpg.connect(args.dsn)
    try:
        await server.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        print(f"dropped {args.database}")
    finally:
        await server.close()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.dashboard_seed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=["seed", "time", "drop"])
    parser.add_argument("--dsn", required=True, help="a server DSN (its database is not used)")
    parser.add_argument("--database", default="kq_dash10m", help="default: %(default)s")
    parser.add_argument("--events", type=int, default=10_000_000, help="default: %(default)s")
    parser.add_argument("--batch", type=int, default=1_000_000, help="events per transaction")
    parser.add_argument("--runs", type=int, default=7, help="requests per page (median)")
    return parser.parse_args(argv)


ACTIONS: dict[str, Any] = {"seed": seed, "time": timings, "drop": drop}

if __name__ == "__main__":
    options = parse()
    asyncio.run(ACTIONS[options.action](options))
