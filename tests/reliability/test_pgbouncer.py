"""Items 6, 9 and 10: kanthorq behind PgBouncer in transaction pooling mode.

Each test starts a PgBouncer of its own (``tests/reliability/pgbouncer.py``) in front of the
test server, with a pool of a few server connections that every client shares.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from urllib.parse import unquote, urlsplit

import asyncpg
import pytest

import kanthorq
from kanthorq.publisher import channel
from kanthorq.sqlfiles import migrations
from kanthorq.testing.databases import scratch_database, with_database
from tests.conftest import Running, wait_until
from tests.reliability import pgbouncer
from tests.reliability.pgbouncer import Bouncer

pytestmark = pytest.mark.skipif(
    pgbouncer.binary() is None,
    reason="PgBouncer is not installed (Debian: apt-get install pgbouncer); CI installs it",
)

Starter = Callable[..., Awaitable[Running]]
OPENS = 24
PUBLISHES = 200
REFUSED = "unsupported startup parameter"


@pytest.fixture
def bouncer(server_dsn: str) -> Iterator[Bouncer]:
    started = Bouncer(server_dsn).start()
    try:
        yield started
    finally:
        started.stop()


def database_of(dsn: str) -> str:
    return unquote(urlsplit(dsn).path.lstrip("/"))


# ---- item 6: migrating through a transaction pooler ---------------------------------------


async def open_all(apps: list[kanthorq.App], timeout: float) -> list[str]:
    """Open the apps at once; what went wrong with each that did not open in time."""
    tasks = [asyncio.ensure_future(app.open()) for app in apps]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    failed = [f"{type(t.exception()).__name__}: {t.exception()}" for t in done if t.exception()]
    return failed + [f"still opening after {timeout:.0f}s"] * len(pending)


@pytest.mark.timeout(180)
async def test_concurrent_opens_on_a_fresh_database_all_finish(
    server_dsn: str, bouncer: Bouncer
) -> None:
    async with scratch_database(server_dsn) as scratch_dsn:
        name = database_of(scratch_dsn)
        through = bouncer.dsn(name)
        apps = [kanthorq.App(through, pool_size=2, statement_cache_size=0) for _ in range(OPENS)]
        late = kanthorq.App(through, pool_size=1, statement_cache_size=0)
        try:
            assert await open_all(apps, timeout=60) == []
            # and no lock is left behind for the opens that come later
            assert await open_all([late], timeout=30) == []
            ids = await asyncio.gather(*(app.publish("m.opened", b"x") for app in apps[:4]))
            assert len(set(ids)) == 4
        finally:
            await asyncio.gather(*(app.close() for app in [*apps, late]), return_exceptions=True)
        direct = await asyncpg.connect(with_database(server_dsn, name))
        try:
            applied = await direct.fetchval("SELECT count(*) FROM kanthorq_migration")
            assert applied == len(migrations())
            held = await direct.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            assert held == 0
        finally:
            await direct.close()


# ---- item 9: the notifier through a transaction pooler ------------------------------------


def kanthorq_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.name.startswith("kanthorq") and r.levelno >= logging.WARNING
    ]


async def test_publishing_notifies_through_pgbouncer_without_warnings(
    dsn: str, bouncer: Bouncer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kanthorq")
    direct = await asyncpg.connect(dsn)
    heard: list[str] = []
    try:
        app = kanthorq.App(bouncer.dsn(database_of(dsn)), statement_cache_size=0)
        async with app:
            await app.publish("a.b", b"first")  # registers the stream
            stream_id = await direct.fetchval(
                "SELECT id FROM kanthorq_stream_registry WHERE name = 'default'"
            )
            await direct.add_listener(channel(stream_id), lambda *args: heard.append(args[2]))
            for n in range(PUBLISHES - 1):
                await app.publish("a.b", str(n).encode())
        # every notification was sent through PgBouncer (and arrives, coalesced)
        await wait_until(lambda: heard, timeout=10)
    finally:
        await direct.close()
    assert kanthorq_warnings(caplog) == []
    assert REFUSED not in bouncer.output()


# ---- item 10: wake-ups behind a transaction pooler ----------------------------------------


def app_through(
    bouncer: Bouncer, dsn: str, **options: object
) -> tuple[kanthorq.App, dict[str, float]]:
    """An app on ``dsn`` through PgBouncer, whose handler notes when each event ran."""
    app = kanthorq.App(
        bouncer.dsn(database_of(dsn)), statement_cache_size=0, shutdown_timeout=5, **options
    )
    seen: dict[str, float] = {}

    @app.subscribe("a.>", consumer="c")
    async def handle(msg: kanthorq.Message) -> None:
        seen[msg.event.id] = time.monotonic()

    return app, seen


@pytest.mark.timeout(90)
async def test_with_a_direct_listen_dsn_a_notification_wakes_the_worker(
    dsn: str, bouncer: Bouncer, start_app: Starter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kanthorq")
    poll = 30.0  # far longer than the waits below: only a notification can wake the worker
    app, seen = app_through(bouncer, dsn, listen_dsn=dsn, poll_interval=poll)
    await start_app(app)
    listener = app.listener
    assert listener is not None
    await wait_until(lambda: listener.notifications_work is not None, timeout=15)
    assert listener.notifications_work is True
    # the first event may meet the worker's first poll; the next ones only a wake-up
    for _ in range(3):
        event_id = await app.publish("a.b", b"x")
        await wait_until(lambda event_id=event_id: event_id in seen, timeout=poll / 3)
    assert kanthorq_warnings(caplog) == []


@pytest.mark.timeout(90)
async def test_without_listen_dsn_one_warning_names_the_fallback_and_polling_works(
    dsn: str, bouncer: Bouncer, start_app: Starter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kanthorq")
    app, seen = app_through(bouncer, dsn, poll_interval=0.5)
    running = await start_app(app)
    assert app.listener is not None
    assert app.listener.connected.is_set()  # the workers did not wait for the probe
    await wait_until(lambda: kanthorq_warnings(caplog), timeout=20)
    ids = [await app.publish("a.b", str(n).encode()) for n in range(5)]
    await wait_until(lambda: all(i in seen for i in ids), timeout=20)  # by polling
    await running.stop()
    warned = kanthorq_warnings(caplog)
    assert len(warned) == 1, warned
    assert warned[0].startswith("kanthorq.listener: ")
    for needle in ("does not receive notifications", "polling every 0.5s", "listen_dsn"):
        assert needle in warned[0]
    assert "KANTHORQ_LISTEN_DSN" in warned[0]
    assert app.listener.notifications_work is False


async def kanthorq_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kanthorq",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in {**os.environ, **(env or {})}.items() if k != "KANTHORQ_DSN"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.timeout(120)
async def test_cli_pub_and_show_work_through_pgbouncer(dsn: str, bouncer: Bouncer) -> None:
    through = bouncer.dsn(database_of(dsn))
    # another client, with prepared statements, leaves them on the shared server connections
    await kanthorq_cli("pub", "a.b", "x", "--dsn", through)
    published = 0
    for how in ([], ["--statement-cache-size", "0"]):
        env = {} if how else {"KANTHORQ_STATEMENT_CACHE_SIZE": "0"}
        for n in range(3):
            code, out, err = await kanthorq_cli(
                "pub", "a.b", str(n), "--dsn", through, *how, env=env
            )
            assert code == 0, err
            assert out.startswith("event_")
            published += 1
        code, out, err = await kanthorq_cli("show", "--dsn", through, *how, env=env)
        assert code == 0, err
        assert "default" in out
    direct = await asyncpg.connect(dsn)
    try:
        stream_id = await direct.fetchval(
            "SELECT id FROM kanthorq_stream_registry WHERE name = 'default'"
        )
        count = await direct.fetchval(
            f"SELECT count(*) FROM kanthorq_{stream_id} WHERE body <> 'x'"
        )
    finally:
        await direct.close()
    assert count == published


# ---- retention: the same fault class as item 6 ---------------------------------------------


def retaining(app: kanthorq.App) -> kanthorq.App:
    app.retain(events=3600)
    return app


# A lock that a server connection holds between transactions is a session lock: through a
# transaction pooler, the next statement of its client may run elsewhere, and the pooler's
# other clients inherit it.
HELD_BETWEEN_TRANSACTIONS = """
SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND a.state = 'idle'
  AND a.datname = current_database()
"""


async def sample_until(db: asyncpg.Connection, stop: asyncio.Event, seen: list[int]) -> None:
    while not stop.is_set():
        seen.append(await db.fetchval(HELD_BETWEEN_TRANSACTIONS))


@pytest.mark.timeout(90)
async def test_retention_through_pgbouncer_holds_no_lock_between_transactions(
    dsn: str, bouncer: Bouncer, start_app: Starter
) -> None:
    through, _ = app_through(bouncer, dsn, poll_interval=0.5, retention_interval=0.02)
    running = await start_app(retaining(through))
    retention = through.retention
    await wait_until(lambda: retention is not None and retention.passes >= 1)
    # other clients keep PgBouncer's few server connections changing hands meanwhile
    busy = kanthorq.App(bouncer.dsn(database_of(dsn)), statement_cache_size=0, pool_size=4)
    stop = asyncio.Event()
    held: list[int] = []

    async def publish_until_stopped() -> None:
        while not stop.is_set():
            await busy.publish("a.b", b"x")

    db = await asyncpg.connect(dsn)
    async with busy:
        await busy.publish("a.b", b"x")
        base = retention.passes if retention is not None else 0
        tasks = [asyncio.create_task(publish_until_stopped()) for _ in range(4)]
        tasks.append(asyncio.create_task(sample_until(db, stop, held)))
        try:
            await wait_until(lambda: retention is not None and retention.passes >= base + 20)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
    await running.stop()
    try:
        held.append(await db.fetchval(HELD_BETWEEN_TRANSACTIONS))
    finally:
        await db.close()
    assert len(held) > 20
    assert max(held) == 0
    # and a worker connected directly takes its turn: nothing holds it off
    direct = retaining(
        kanthorq.App(dsn, poll_interval=0.5, retention_interval=0.05, shutdown_timeout=5)
    )

    @direct.subscribe("a.>", consumer="c")
    async def handle(msg: kanthorq.Message) -> None:
        pass

    await start_app(direct)
    await wait_until(lambda: direct.retention is not None and direct.retention.passes >= 1)
