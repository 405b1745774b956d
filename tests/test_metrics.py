"""Prometheus metrics, with prometheus-client: the counters equal what the database shows
after a known mix of outcomes; the gauges are read from the database at most every
refresh interval, never per scrape; the ASGI and aiohttp endpoints serve them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg
import httpx
import prometheus_client
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import kanthorq
import kanthorq.metrics
from kanthorq.entities import TaskState
from tests.conftest import Running, stream_table, task_table, wait_until

Starter = Callable[..., Awaitable[Running]]
AppFactory = Callable[..., kanthorq.App]


def value(registry: prometheus_client.CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


async def db_outcomes(db: asyncpg.Connection, consumer: str) -> dict[str, int]:
    """What the task table shows: tasks per final state, and failed attempts that were
    retried (every failure appends one error record; a discard's is the last)."""
    table = await task_table(db, consumer)
    row = await db.fetchrow(
        f"""SELECT count(*) FILTER (WHERE state = 101) AS completed,
                   count(*) FILTER (WHERE state = -102) AS discarded,
                   count(*) FILTER (WHERE state = -101) AS cancelled,
                   coalesce(sum(cardinality(attempted_error)), 0) AS errors,
                   coalesce(sum(attempt_count), 0) AS attempts
            FROM {table}"""
    )
    assert row is not None
    return {
        "completed": row["completed"],
        "discarded": row["discarded"],
        "cancelled": row["cancelled"],
        "retried": row["errors"] - row["discarded"],
        "attempts": row["attempts"],
    }


async def test_the_counters_equal_the_database_after_a_mix_of_outcomes(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    registry = prometheus_client.CollectorRegistry()
    app = make_app()
    metrics = kanthorq.metrics.enable(app, registry=registry, refresh_interval=0.2)
    assert kanthorq.metrics.enable(app, registry=registry) is metrics  # added once

    @app.subscribe(
        "job.*", consumer="work", max_retries=2, backoff=kanthorq.Fixed(delay=0), concurrency=5
    )
    async def work(msg: kanthorq.Message) -> None:
        failures = msg.json()["fail"]
        if failures < 0:
            await msg.cancel()
        elif msg.task.attempt_count <= failures:
            raise ValueError(f"attempt {msg.task.attempt_count} fails")

    await start_app(app)
    # 5 complete at once, 3 after one retry, 2 are discarded after 3 attempts, 1 cancelled
    plan = [0] * 5 + [1] * 3 + [99] * 2 + [-1]
    await app.publish_many([("job.run", f'{{"fail": {n}}}'.encode()) for n in plan[:6]])
    for n in plan[6:]:
        await app.publish("job.run", f'{{"fail": {n}}}'.encode())

    async def final() -> bool:
        return (await db_outcomes(db, "work"))["completed"] == 8 and (
            await db_outcomes(db, "work")
        )["discarded"] == 2

    await wait_until(final, timeout=30)
    expected = await db_outcomes(db, "work")
    assert expected == {
        "completed": 8,
        "discarded": 2,
        "cancelled": 1,
        "retried": 3 + 2 * 2,
        "attempts": 8 + 3 + 2 * 3 + 1,
    }

    def counted() -> dict[str, float]:
        return {
            outcome: value(registry, "kanthorq_tasks_total", consumer="work", outcome=outcome)
            for outcome in ("completed", "discarded", "cancelled", "retried")
        }

    want = {k: float(v) for k, v in expected.items() if k != "attempts"}
    await wait_until(lambda: counted() == want, timeout=10)  # confirmations come back
    for outcome in ("rescued", "handed_back"):
        assert value(registry, "kanthorq_tasks_total", consumer="work", outcome=outcome) == 0
    attempts = float(expected["attempts"])
    assert value(registry, "kanthorq_handler_seconds_count", consumer="work") == attempts
    assert value(registry, "kanthorq_task_wait_seconds_count", consumer="work") == attempts
    assert value(registry, "kanthorq_tasks_running", consumer="work") == 0
    events = await db.fetchval(f"SELECT count(*) FROM {await stream_table(db)}")
    assert value(registry, "kanthorq_published_events_total", stream="default") == events == 11

    # the gauges, read from the database by the refresher
    def states() -> dict[str, float]:
        return {
            state: value(registry, "kanthorq_consumer_tasks", consumer="work", state=state)
            for state in ("completed", "discarded", "cancelled", "running", "available")
        }

    await wait_until(
        lambda: (
            states()
            == {"completed": 8, "discarded": 2, "cancelled": 1, "running": 0, "available": 0}
        ),
        timeout=20,
    )
    assert registry.get_sample_value("kanthorq_consumer_lag_events", {"consumer": "work"}) == 0


async def test_the_gauges_are_never_read_per_scrape(
    make_app: AppFactory, start_app: Starter
) -> None:
    registry = prometheus_client.CollectorRegistry()
    app = make_app(poll_interval=0.05)
    metrics = kanthorq.metrics.enable(app, registry=registry)  # the default: every 15 s
    gauges = metrics.gauges
    assert gauges is not None

    @app.subscribe("job.*", consumer="work")
    async def work(msg: kanthorq.Message) -> None:
        return None

    started = time.monotonic()
    await start_app(app)
    await wait_until(lambda: gauges.refreshed == 1, timeout=20)
    for _ in range(50):
        body, _ = kanthorq.metrics.render(registry)
        assert b"kanthorq_consumer_tasks" in body
        await asyncio.sleep(0.01)
    # the workers stepped many times meanwhile (a poll every 50 ms)
    assert gauges.refreshed <= 1 + (time.monotonic() - started) / 15


async def test_a_database_error_is_counted_by_operation(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    registry = prometheus_client.CollectorRegistry()
    app = make_app()
    kanthorq.metrics.enable(app, registry=registry)

    @app.subscribe("job.*", consumer="work")
    async def work(msg: kanthorq.Message) -> None:
        return None

    await start_app(app)
    await db.execute(f"DROP TABLE {await task_table(db, 'work')}")
    await app.publish("job.run", b"{}")  # the wake-up's conversion fails
    await wait_until(
        lambda: value(registry, "kanthorq_db_errors_total", operation="convert") > 0, timeout=20
    )


async def test_the_asgi_and_aiohttp_endpoints_serve_the_metrics(make_app: AppFactory) -> None:
    registry = prometheus_client.CollectorRegistry()
    app = make_app()
    kanthorq.metrics.enable(app, registry=registry)
    async with app:
        await app.publish("job.run", b"{}")
    line = b'kanthorq_published_events_total{stream="default"} 1.0'

    transport = httpx.ASGITransport(app=kanthorq.metrics.asgi_app(registry))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert line in response.content

    web_app = web.Application()
    web_app.router.add_get("/metrics", kanthorq.metrics.aiohttp_handler(registry))
    async with TestClient(TestServer(web_app)) as client:
        got = await client.get("/metrics")
        assert got.status == 200
        assert got.headers["Content-Type"].startswith("text/plain")
        assert line in await got.read()


async def test_a_task_of_a_deleted_event_has_no_wait_time(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    """Its event is gone (retention, a person): the handler's task is discarded, the wait
    histogram skips it rather than count from the epoch."""
    registry = prometheus_client.CollectorRegistry()
    app = make_app()
    kanthorq.metrics.enable(app, registry=registry)

    @app.subscribe("job.*", consumer="work")
    async def work(msg: kanthorq.Message) -> None:
        return None

    async with app:
        event_id = await app.publish("job.run", b"{}")
        running = await start_app(app)
        table = await task_table(db, "work")
        await wait_until(
            lambda: db.fetchval(f"SELECT state FROM {table} WHERE event_id = $1", event_id),
            timeout=20,
        )
        await running.stop()
    await db.execute(f"UPDATE {table} SET state = 1, schedule_at = 0")
    await db.execute(f"DELETE FROM {await stream_table(db)}")
    await start_app(app)
    await wait_until(
        lambda: db.fetchval(
            f"SELECT state = $2 FROM {table} WHERE event_id = $1",
            event_id,
            int(TaskState.DISCARDED),
        ),
        timeout=20,
    )
    await wait_until(
        lambda: value(registry, "kanthorq_handler_seconds_count", consumer="work") == 2,
        timeout=20,
    )
    assert value(registry, "kanthorq_task_wait_seconds_count", consumer="work") == 1
