"""Health: /healthz and /readyz of a running app (a worker stuck behind a lock, a dead
listener), ``kanthorq run --metrics-port``, and ``kanthorq health``'s exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

import kanthorq
from kanthorq import endpoints, health
from kanthorq.errors import ConfigError
from tests.conftest import Running, scratch_database, task_table, wait_until
from tests.test_cli import NOWHERE, cli, spawn

Starter = Callable[..., Awaitable[Running]]
AppFactory = Callable[..., kanthorq.App]


@asynccontextmanager
async def served(app: kanthorq.App, *, metrics: bool = False) -> AsyncIterator[httpx.AsyncClient]:
    async with endpoints.serving(app, "127.0.0.1:0", metrics=metrics) as server:
        assert server.address is not None
        host, port = server.address
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=10) as client:
            yield client


def not_ready(client: httpx.AsyncClient, needle: str) -> Callable[[], Awaitable[str | None]]:
    async def check() -> str | None:
        response = await client.get("/readyz")
        if response.status_code == 503 and needle in response.text:
            return response.text
        return None

    return check


def ready(client: httpx.AsyncClient) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await client.get("/readyz")).status_code == 200

    return check


async def test_the_probes_of_a_running_app(make_app: AppFactory, start_app: Starter) -> None:
    app = make_app()

    @app.subscribe("job.*", consumer="work")
    async def work(msg: kanthorq.Message) -> None:
        return None

    async with served(app) as client:
        live = await client.get("/healthz")
        assert live.status_code == 200
        assert "the event loop answers" in live.text
        before = await client.get("/readyz")  # not running yet
        assert before.status_code == 503
        assert "the app's workers are not running" in before.text

        await start_app(app)
        await wait_until(ready(client), timeout=20)
        response = await client.get("/readyz", headers={"Accept": "application/json"})
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert body["ok"] is True
        names = [c["name"] for c in body["checks"]]
        assert names == ["database", "poll", "consumer work", "listener"]
        assert (await client.get("/nowhere")).status_code == 404
        assert (await client.post("/readyz")).status_code == 405
        assert (await client.get("/metrics")).status_code == 404  # metrics=False


async def test_a_worker_stuck_behind_a_lock_is_not_ready(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app()
    health.enable(app, stale=1.0)

    @app.subscribe("job.*", consumer="work")
    async def work(msg: kanthorq.Message) -> None:
        return None

    await start_app(app)
    async with served(app) as client:
        await wait_until(ready(client), timeout=20)
        table = await task_table(db, "work")
        lock = db.transaction()
        await lock.start()
        try:
            await db.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            await app.publish("job.run", b"{}")  # its conversion waits for the lock
            text = await wait_until(not_ready(client, "FAIL consumer work"), timeout=30)
        finally:
            await lock.rollback()
        assert "FAIL consumer work: its worker loop has been in one step for" in text
        assert "a lock" in text
        assert "ok   database" in text  # the database itself answers
        await wait_until(ready(client), timeout=20)


def with_user(dsn: str, user: str) -> str:
    parts = urlsplit(dsn)
    host = parts.hostname or ""
    netloc = f"{user}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


async def test_a_dead_listener_is_not_ready(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection, dsn: str
) -> None:
    role = f"kq_listener_{os.getpid()}"
    await db.execute(f'DROP ROLE IF EXISTS "{role}"')
    await db.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        app = make_app(listen_dsn=with_user(dsn, role))

        @app.subscribe("job.*", consumer="work")
        async def work(msg: kanthorq.Message) -> None:
            return None

        running = await start_app(app)
        async with served(app) as client:
            await wait_until(ready(client), timeout=20)
            listener = app.listener
            assert listener is not None
            assert listener.connection is not None
            pid = listener.connection.get_server_pid()
            # the listener cannot come back: its role may no longer log in
            await db.execute(f'ALTER ROLE "{role}" NOLOGIN')
            assert await db.fetchval("SELECT pg_terminate_backend($1)", pid)
            text = await wait_until(not_ready(client, "listener"), timeout=30)
            assert "FAIL listener: not connected" in text
            assert "found by the poll" in text
            assert "ok   consumer work" in text  # the poll covers for it
            await db.execute(f'ALTER ROLE "{role}" LOGIN')
            await wait_until(ready(client), timeout=30)
        await running.stop()
    finally:
        await db.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_the_address_of_metrics_port() -> None:
    assert endpoints.parse_address("9464") == ("0.0.0.0", 9464)
    assert endpoints.parse_address("127.0.0.1:0") == ("127.0.0.1", 0)
    assert endpoints.parse_address("[::1]:9464") == ("::1", 9464)
    for bad in ("", "host:", "70000", "port"):
        with pytest.raises(ConfigError, match=r"\[HOST:\]PORT"):
            endpoints.parse_address(bad)


RUN_APP = """
import kanthorq

app = kanthorq.App(poll_interval=0.2)


@app.subscribe("job.*", consumer="work")
async def work(msg: kanthorq.Message) -> None:
    return None
"""


async def _serving_url(stream: asyncio.StreamReader) -> str:
    while True:
        line = await stream.readline()
        assert line, "kanthorq run ended before it served its endpoints"
        found = re.search(rb"on (http://[\d.]+:\d+)", line)
        if found and b"/metrics" in line:
            return found.group(1).decode()


async def test_run_serves_metrics_healthz_and_readyz(
    dsn: str, tmp_path: Path, make_app: AppFactory
) -> None:
    (tmp_path / "run_app.py").write_text(textwrap.dedent(RUN_APP))
    args = ("run", "run_app:app", "--dsn", dsn, "--metrics-port", "127.0.0.1:0")
    async with spawn(*args, cwd=tmp_path) as proc:
        assert proc.stderr is not None
        url = await asyncio.wait_for(_serving_url(proc.stderr), 30)
        async with make_app() as app:
            await app.publish("job.run", b"{}")
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            await wait_until(ready(client), timeout=20)
            assert (await client.get("/healthz")).status_code == 200

            async def completed() -> bool:
                text = (await client.get("/metrics")).text
                return 'kanthorq_tasks_total{consumer="work",outcome="completed"} 1.0' in text

            await wait_until(completed, timeout=20)
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()


async def test_run_refuses_a_bad_metrics_port(tmp_path: Path) -> None:
    (tmp_path / "run_app.py").write_text(textwrap.dedent(RUN_APP))
    result = await cli("run", "run_app:app", "--metrics-port", "nope", cwd=tmp_path)
    assert result.code == 2, result
    assert "--metrics-port takes [HOST:]PORT" in result.err


# ---- kanthorq health ------------------------------------------------------------------


async def test_health_exits_0_on_a_healthy_database(dsn: str, tmp_path: Path) -> None:
    result = await cli("health", "--dsn", dsn, "--json", cwd=tmp_path)
    assert result.code == 0, result
    report = json.loads(result.out)
    assert report["ok"] is True
    assert [c["name"] for c in report["checks"]] == ["database", "schema"]
    text = await cli("health", "--dsn", dsn, cwd=tmp_path)
    assert text.code == 0, text
    assert text.out.startswith("ready\nok   database: answered")


async def test_health_exits_1_when_the_database_is_away_or_not_migrated(
    server_dsn: str, tmp_path: Path
) -> None:
    away = await cli("health", "--dsn", NOWHERE, "--json", "--timeout", "5", cwd=tmp_path)
    assert away.code == 1, away
    [check] = json.loads(away.out)["checks"]
    assert check["name"] == "database"
    assert check["ok"] is False
    async with scratch_database(server_dsn) as empty:
        bare = await cli("health", "--dsn", empty, cwd=tmp_path)
    assert bare.code == 1, bare
    assert "FAIL schema:" in bare.out
    assert "migrations not applied" in bare.out


async def test_health_checks_the_named_consumers(
    dsn: str,
    tmp_path: Path,
    make_app: AppFactory,
    start_app: Starter,
    db: asyncpg.Connection,
) -> None:
    app = make_app()

    @app.subscribe("job.*", consumer="work", visibility_timeout=60)
    async def work(msg: kanthorq.Message) -> None:
        return None

    running = await start_app(app)
    first = await app.publish("job.run", b"{}")
    await app.publish("job.run", b"{}")
    table = await task_table(db, "work")

    async def completed() -> bool:
        return await db.fetchval(f"SELECT count(*) FROM {table} WHERE state = 101") == 2

    await wait_until(completed, timeout=20)
    await running.stop()

    served = await cli("health", "--dsn", dsn, "--consumer", "work", "--json", cwd=tmp_path)
    assert served.code == 0, served
    [consumer] = [c for c in json.loads(served.out)["checks"] if c["name"] == "consumer work"]
    assert consumer["ok"] is True
    unknown = await cli("health", "--dsn", dsn, "--consumer", "nobody", cwd=tmp_path)
    assert unknown.code == 1, unknown
    assert "FAIL consumer nobody: no such consumer" in unknown.out

    # claimed by a worker that is gone, long past its visibility timeout, and not rescued
    await db.execute(
        f"UPDATE {table} SET state = 2, attempted_at = 1, deadline_at = 1 WHERE event_id = $1",
        first,
    )
    late = await cli("health", "--dsn", dsn, "--consumer", "work", cwd=tmp_path)
    assert late.code == 1, late
    assert "1 running task is past its visibility timeout" in late.out


async def test_health_needs_a_database(tmp_path: Path) -> None:
    result = await cli("health", cwd=tmp_path)
    assert result.code == 2, result
    assert "needs --dsn or $KANTHORQ_DSN" in result.err
