"""The embedded default: no DSN anywhere means a PostgreSQL under $KANTHORQ_HOME.

Each case runs in a child process with a clean environment (no KANTHORQ_DSN), so the test
process's own server and settings cannot leak in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import kanthorq

PUBLISH_AND_READ = """
import asyncio, json, logging, sys
import kanthorq

logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

async def main():
    app = kanthorq.App()
    assert app.dsn is None, app.dsn          # nothing is started before open
    async with app:
        event_id = await app.publish("embedded.hello", {"n": 1}, metadata={"via": "child"})
        ids = await app.publish_many([("embedded.many", b"raw")])
        stream_id = await app.pool.fetchval(
            "SELECT id FROM kanthorq_stream_registry WHERE name = 'default'")
        rows = await app.pool.fetch(
            f'SELECT id, subject, body, metadata FROM "kanthorq_{stream_id}" ORDER BY subject')
        print(json.dumps({
            "dsn": app.dsn,
            "ids": [event_id, *ids],
            "rows": [[r["id"], r["subject"], r["body"].decode(), r["metadata"]] for r in rows],
        }))

asyncio.run(main())
"""

HOLD_OPEN = """
import asyncio, sys
import kanthorq

async def main():
    async with kanthorq.App() as app:
        print(await app.publish("shared.first", b"a"), flush=True)
        await asyncio.to_thread(sys.stdin.readline)     # until the other process is done
        stream_id = await app.pool.fetchval(
            "SELECT id FROM kanthorq_stream_registry WHERE name = 'default'")
        print(await app.pool.fetchval(f'SELECT count(*) FROM "kanthorq_{stream_id}"'), flush=True)

asyncio.run(main())
"""

JOIN = """
import asyncio, sys
import kanthorq

async def main():
    async with kanthorq.App() as app:
        stream_id = await app.pool.fetchval(
            "SELECT id FROM kanthorq_stream_registry WHERE name = 'default'")
        found = await app.pool.fetchval(
            f'SELECT count(*) FROM "kanthorq_{stream_id}" WHERE id = $1', sys.argv[1])
        await app.publish("shared.second", b"b")
        print(found)

asyncio.run(main())
"""

UNAVAILABLE = """
import asyncio, sys
sys.modules["pgserver"] = None                      # as if the extra were not installed
import kanthorq

async def main():
    app = kanthorq.App()
    try:
        async with app:
            pass
    except kanthorq.KanthorQError as exc:
        print(type(exc).__name__)
        print(exc)
    else:
        print("opened")

asyncio.run(main())
"""


def child_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KANTHORQ_")}
    env["KANTHORQ_HOME"] = str(home)
    return env


def run_child(code: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=child_env(home),
        cwd=home,
        capture_output=True,
        text=True,
        timeout=40,
        check=False,
    )


def test_app_opens_on_the_embedded_server(embedded_home: Path) -> None:
    done = run_child(PUBLISH_AND_READ, embedded_home)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    # the data lives under $KANTHORQ_HOME, and the DSN in use is logged
    assert (embedded_home / "pgdata" / "PG_VERSION").is_file()
    assert str(embedded_home) in result["dsn"]
    assert "embedded PostgreSQL" in done.stderr
    assert result["dsn"] in done.stderr
    rows = {row[0]: row[1:] for row in result["rows"]}
    first, second = result["ids"]
    assert rows[first][:2] == ["embedded.hello", '{"n":1}']
    assert json.loads(rows[first][2]) == {"via": "child"}
    assert rows[second][:2] == ["embedded.many", "raw"]

    # the data outlives the process: a second run finds the first run's events
    again = run_child(PUBLISH_AND_READ, embedded_home)
    assert again.returncode == 0, again.stderr
    assert len(json.loads(again.stdout)["rows"]) == 4


def test_processes_share_one_embedded_server(embedded_home: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_OPEN],
        env=child_env(embedded_home),
        cwd=embedded_home,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdin is not None
        first_id = holder.stdout.readline().strip()
        assert first_id.startswith("event_"), holder.stderr.read() if holder.stderr else ""
        joined = run_child(JOIN, embedded_home, first_id)
        assert joined.returncode == 0, joined.stderr
        assert joined.stdout.strip() == "1"  # it saw the holder's event
        out, err = holder.communicate("go on\n", timeout=30)
        assert holder.returncode == 0, err
        assert out.strip() == "2"  # and the holder sees the other's, on a server still up
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_without_the_extra_the_error_names_both_ways_out(embedded_home: Path) -> None:
    done = run_child(UNAVAILABLE, embedded_home)
    assert done.returncode == 0, done.stderr
    name, message = done.stdout.split("\n", 1)
    assert name == "EmbeddedUnavailable"
    # way out 1: give a DSN
    assert "KANTHORQ_DSN" in message
    assert "dsn" in message.lower()
    # way out 2: install the embedded server
    assert "pip install 'kanthorq[embedded]'" in message
    assert not (embedded_home / "pgdata").exists()


def test_a_dsn_in_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KANTHORQ_DSN", "postgresql://somewhere:5433/db")
    assert kanthorq.App().dsn == "postgresql://somewhere:5433/db"
    assert kanthorq.App("postgresql://argument/db").dsn == "postgresql://argument/db"
    monkeypatch.setenv("KANTHORQ_DSN", "")
    assert kanthorq.App().dsn is None  # an empty variable means none: the embedded server
