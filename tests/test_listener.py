"""Wake-ups: LISTEN/NOTIFY wakes an idle worker long before its poll, and survives the loss
of the listening connection."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg

import kanthorq
from kanthorq.ids import new_id
from kanthorq.publisher import channel
from tests.conftest import Running, stream_table, wait_until

AppFactory = Callable[..., kanthorq.App]
Starter = Callable[..., Awaitable[Running]]
POLL = 10.0
FAST = 2.0


async def _handled_within(app: kanthorq.App, seen: dict[str, float], subject: str) -> float:
    start = time.monotonic()
    event_id = await app.publish(subject, b"x")
    await wait_until(lambda: event_id in seen, timeout=POLL * 0.8)
    return seen[event_id] - start


async def test_publish_wakes_an_idle_worker_before_the_poll(
    make_app: AppFactory, start_app: Starter
) -> None:
    app = make_app(poll_interval=POLL)
    seen: dict[str, float] = {}

    @app.subscribe("a.>", consumer="c")
    async def handler(msg: kanthorq.Message) -> None:
        seen[msg.event.id] = time.monotonic()

    await start_app(app)
    # the worker's first poll ran at start; it now sleeps until a notification
    assert await _handled_within(app, seen, "a.one") < FAST
    assert await _handled_within(app, seen, "a.two") < FAST


async def test_publish_in_a_transaction_wakes_the_worker_at_commit(
    make_app: AppFactory, start_app: Starter
) -> None:
    app = make_app(poll_interval=POLL)
    seen: dict[str, float] = {}

    @app.subscribe("a.>", consumer="c")
    async def handler(msg: kanthorq.Message) -> None:
        seen[msg.event.id] = time.monotonic()

    await start_app(app)
    conn = await asyncpg.connect(app.dsn)
    try:
        async with conn.transaction():
            event_id = await app.publish("a.b", b"x", conn=conn)
        committed = time.monotonic()
    finally:
        await conn.close()
    await wait_until(lambda: event_id in seen, timeout=POLL * 0.8)
    assert seen[event_id] - committed < FAST


async def test_worker_still_wakes_after_the_listener_connection_is_killed(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app(poll_interval=POLL)
    seen: dict[str, float] = {}

    @app.subscribe("a.>", consumer="c")
    async def handler(msg: kanthorq.Message) -> None:
        seen[msg.event.id] = time.monotonic()

    await start_app(app)
    listener = app.listener
    assert listener is not None
    assert await _handled_within(app, seen, "a.before") < FAST

    assert listener.connection is not None
    old_pid = listener.connection.get_server_pid()
    killed_at = time.monotonic()
    assert await db.fetchval("SELECT pg_terminate_backend($1)", old_pid)

    def reconnected() -> bool:
        conn = listener.connection
        return (
            listener.connected.is_set()
            and conn is not None
            and not conn.is_closed()
            and conn.get_server_pid() != old_pid
        )

    await wait_until(reconnected, timeout=POLL * 0.8)
    assert time.monotonic() - killed_at < FAST
    new_pid = listener.connection.get_server_pid() if listener.connection else None
    listening = await db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", new_pid)
    assert listening == 1
    assert await _handled_within(app, seen, "a.after") < FAST


async def test_events_published_while_the_listener_is_down_are_caught_up(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    """A publish whose notification is lost (nobody listening) is found after the reconnect,
    not only at the next poll."""
    app = make_app(poll_interval=POLL)
    seen: dict[str, float] = {}

    @app.subscribe("a.>", consumer="c")
    async def handler(msg: kanthorq.Message) -> None:
        seen[msg.event.id] = time.monotonic()

    await start_app(app)
    listener = app.listener
    assert listener is not None
    assert listener.connection is not None
    old_pid = listener.connection.get_server_pid()
    # a client that writes without notifying (psql, Go without the notify), seen only by
    # the reconnect's catch-up or the poll
    stream = await stream_table(db)
    await db.execute(
        f"INSERT INTO {stream} (id, subject, body) VALUES ($1, 'a.quiet', '')",
        new_id("event"),
    )
    start = time.monotonic()
    assert await db.fetchval("SELECT pg_terminate_backend($1)", old_pid)
    await wait_until(lambda: len(seen) == 1, timeout=POLL * 0.8)
    assert time.monotonic() - start < FAST


async def test_the_poll_finds_events_written_without_a_notification(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app(poll_interval=0.3)
    seen: list[str] = []

    @app.subscribe("a.>", consumer="c")
    async def handler(msg: kanthorq.Message) -> None:
        seen.append(msg.event.id)

    await start_app(app)
    stream = await stream_table(db)
    event_id = new_id("event")
    # a client that writes only the contract's columns and sends no notification
    await db.execute(
        f"INSERT INTO {stream} (id, subject, body, metadata, created_at) "
        "VALUES ($1, 'a.raw', 'x', '{}', kanthorq_now_ms())",
        event_id,
    )
    await wait_until(lambda: seen == [event_id], timeout=5)


async def test_an_app_runs_again_after_shutdown(make_app: AppFactory, start_app: Starter) -> None:
    app = make_app(poll_interval=POLL)
    seen: dict[str, float] = {}

    @app.subscribe("a.>", consumer="c")
    async def handler(msg: kanthorq.Message) -> None:
        seen[msg.event.id] = time.monotonic()

    running = await start_app(app)
    assert await _handled_within(app, seen, "a.one") < FAST
    await running.stop()
    await start_app(app)
    assert await _handled_within(app, seen, "a.two") < FAST


async def test_a_lone_publish_is_notified_by_its_own_commit_and_the_next_one_still_is(
    make_app: AppFactory, db: asyncpg.Connection
) -> None:
    app = make_app()
    async with app:
        await app.publish("a.b", b"0")  # registers the stream
        notifier = app._notifier
        assert notifier is not None
        await notifier.flush()
        stream_id = await db.fetchval(
            "SELECT id FROM kanthorq_stream_registry WHERE name = 'default'"
        )
        got: list[int] = []
        await db.add_listener(channel(stream_id), lambda _c, pid, _ch, _p: got.append(pid))
        await asyncio.sleep(0.05)  # longer than the coalescing window

        await app.publish("a.b", b"1")
        await wait_until(lambda: len(got) == 1, timeout=FAST)
        await notifier.flush()
        await asyncio.sleep(0.1)
        assert len(got) == 1  # once: not again from the background
        # sent by the publish's own statement, not by the notifier's connection
        own = await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND query LIKE '%pg_notify($6%'",
            got[0],
        )
        assert own == 1

        # two at once: the second within the window is coalesced, and still notified
        await asyncio.sleep(0.05)
        await app.publish("a.b", b"2")
        await app.publish("a.b", b"3")
        await notifier.flush()
        await wait_until(lambda: len(got) == 3, timeout=FAST)
        await asyncio.sleep(0.1)
        assert len(got) == 3
