"""The command line, run as a subprocess (``python -m kanthorq ...``) against the test database."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

import kanthorq
from kanthorq.entities import TaskState
from kanthorq.ids import now_ms
from tests.conftest import stream_table, task_table, wait_until

NOWHERE = "postgresql://postgres@nosuchhost.invalid:5432/nothing"


@dataclass
class Result:
    code: int
    out: str
    err: str


def _env(dsn: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("KANTHORQ_DSN", None)  # the tests name their database with --dsn ...
    if dsn is not None:
        env["KANTHORQ_DSN"] = dsn  # ... or with this
    env["PYTHONUNBUFFERED"] = "1"
    return env


@asynccontextmanager
async def spawn(
    *args: str, cwd: Path, stdin: bool = False, env_dsn: str | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kanthorq",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=_env(env_dsn),
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()


async def cli(
    *args: str,
    cwd: Path,
    stdin: bytes | None = None,
    env_dsn: str | None = None,
    timeout: float = 30,
) -> Result:
    async with spawn(*args, cwd=cwd, stdin=stdin is not None, env_dsn=env_dsn) as proc:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


def assert_clean_error(result: Result, code: int, *needles: str) -> None:
    """One ``kanthorq: error:`` line naming ``needles``, and no traceback."""
    assert result.code == code, result
    assert "Traceback" not in result.err, result.err
    lines = [line for line in result.err.splitlines() if line.startswith("kanthorq: error:")]
    assert len(lines) == 1, result.err
    for needle in needles:
        assert needle in lines[0], result.err


async def events(db: asyncpg.Connection, stream: str = "default") -> list[asyncpg.Record]:
    table = await stream_table(db, stream)
    return await db.fetch(f"SELECT id, subject, body, metadata FROM {table} ORDER BY id")


# ---- help and usage -------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["run"],
        ["migrate"],
        ["migrate", "up"],
        ["migrate", "down"],
        ["migrate", "status"],
        ["pub"],
        ["health"],
    ],
)
async def test_help_at_every_level(command: list[str], tmp_path: Path) -> None:
    result = await cli(*command, "--help", cwd=tmp_path)
    assert result.code == 0, result
    assert result.out.startswith(f"usage: kanthorq {' '.join(command)}".rstrip()), result.out
    assert "--dsn" in result.out
    if len(command) < 2:
        assert "examples:" in result.out


async def test_no_command_is_bad_usage(tmp_path: Path) -> None:
    result = await cli(cwd=tmp_path)
    assert result.code == 2
    assert "usage: kanthorq" in result.err


# ---- pub ------------------------------------------------------------------------------


async def test_pub_body_argument(dsn: str, db: asyncpg.Connection, tmp_path: Path) -> None:
    result = await cli(
        "pub",
        "order.created",
        '{"id": 1}',
        "--metadata",
        '{"source": "cli"}',
        "--dsn",
        dsn,
        cwd=tmp_path,
    )
    assert result.code == 0, result
    [row] = await events(db)
    assert result.out == f"{row['id']}\n"
    assert row["subject"] == "order.created"
    assert row["body"] == b'{"id": 1}'
    assert row["metadata"] == '{"source": "cli"}'


async def test_pub_body_from_stdin(dsn: str, db: asyncpg.Connection, tmp_path: Path) -> None:
    body = b"\x00\xffnot utf-8\nsecond line\n"
    result = await cli("pub", "blob.raw", "--stream", "raw", cwd=tmp_path, stdin=body, env_dsn=dsn)
    assert result.code == 0, result
    [row] = await events(db, "raw")
    assert result.out.split() == [row["id"]]
    assert row["body"] == body


async def test_pub_lines(dsn: str, db: asyncpg.Connection, tmp_path: Path) -> None:
    stdin = b"one\ntwo\r\n\nthree\nfour\nfive"
    result = await cli(
        "pub", "line.read", "--lines", "--batch-size", "2", "--dsn", dsn, cwd=tmp_path, stdin=stdin
    )
    assert result.code == 0, result
    rows = {row["id"]: row for row in await events(db)}
    printed = result.out.split()
    assert sorted(printed) == sorted(rows)
    assert [rows[i]["body"] for i in printed] == [b"one", b"two", b"three", b"four", b"five"]
    assert {row["subject"] for row in rows.values()} == {"line.read"}


async def test_pub_many_lines_keep_their_order(
    dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    stdin = b"".join(b'{"n": %d}\n' % n for n in range(2500))
    result = await cli("pub", "bulk.n", "--lines", "--dsn", dsn, cwd=tmp_path, stdin=stdin)
    assert result.code == 0, result
    bodies = {row["id"]: row["body"] for row in await events(db)}
    printed = result.out.split()
    assert sorted(printed) == sorted(bodies)
    assert [bodies[i] for i in printed] == stdin.splitlines()  # the ids follow stdin's order


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["a..b", "x"], "'a..b'"),
        (["order.*", "x"], "'order.*'"),
        (["order.created", "x", "--stream", "bad;drop"], "'bad;drop'"),
        (["order.created", "x", "--metadata", "[1, 2]"], "--metadata"),
        (["order.created", "x", "--metadata", "{not json"], "--metadata"),
        (["order.created", "x", "--lines"], "--lines"),
    ],
)
async def test_pub_bad_input_is_usage_error(args: list[str], needle: str, tmp_path: Path) -> None:
    # the DSN points nowhere: the input is refused before any connection is tried
    result = await cli("pub", *args, "--dsn", NOWHERE, cwd=tmp_path)
    assert_clean_error(result, 2, needle)


async def test_bad_dsn_host_is_runtime_failure(tmp_path: Path) -> None:
    for command in (["pub", "order.created", "x"], ["migrate", "up"]):
        result = await cli(*command, "--dsn", NOWHERE, cwd=tmp_path)
        assert_clean_error(result, 1, "nosuchhost.invalid")
    debug = await cli("pub", "order.created", "x", "--dsn", NOWHERE, "--debug", cwd=tmp_path)
    assert debug.code == 1
    assert "Traceback" in debug.err
    assert "ConnectionFailed" in debug.err


async def test_malformed_dsn_is_usage_error(tmp_path: Path) -> None:
    result = await cli("pub", "order.created", "x", "--dsn", "mysql://x/y", cwd=tmp_path)
    assert_clean_error(result, 2, "postgresql://")


# ---- migrate --------------------------------------------------------------------------


async def _exists(db: asyncpg.Connection, table: str) -> bool:
    return bool(await db.fetchval("SELECT to_regclass($1) IS NOT NULL", table))


async def test_migrate_down_and_up(dsn: str, db: asyncpg.Connection, tmp_path: Path) -> None:
    assert (await cli("pub", "order.created", "x", "--dsn", dsn, cwd=tmp_path)).code == 0
    stream = (await stream_table(db)).strip('"')

    refused = await cli("migrate", "down", "--dsn", dsn, cwd=tmp_path)
    assert_clean_error(refused, 2, "--yes")
    assert await _exists(db, stream)

    down = await cli("migrate", "down", "--yes", "--dsn", dsn, cwd=tmp_path)  # the last one
    assert down.code == 0, down
    assert down.out == "reverted 0005_faster_conversion\n"
    assert await _exists(db, stream)
    status = await cli("migrate", "status", "--dsn", dsn, cwd=tmp_path)
    assert status.code == 0
    assert status.out.split() == [
        *("0001_registry", "applied", "0002_go_contract", "applied"),
        *("0003_limits", "applied", "0004_schedules", "applied"),
        *("0005_faster_conversion", "pending"),
    ]

    down = await cli("migrate", "down", "--all", "--yes", "--dsn", dsn, cwd=tmp_path)
    assert down.code == 0
    assert down.out == (
        "reverted 0004_schedules\nreverted 0003_limits\nreverted 0002_go_contract\n"
        "reverted 0001_registry\n"
    )
    for table in (stream, "kanthorq_stream_registry", "kanthorq_consumer_registry"):
        assert not await _exists(db, table), table
    status = await cli("migrate", "status", "--dsn", dsn, cwd=tmp_path)
    assert (status.code, status.out.split()) == (
        0,
        [
            *("0001_registry", "pending", "0002_go_contract", "pending"),
            *("0003_limits", "pending", "0004_schedules", "pending"),
            *("0005_faster_conversion", "pending"),
        ],
    )

    up = await cli("migrate", "up", "--dsn", dsn, cwd=tmp_path)
    assert up.code == 0
    assert up.out == (
        "applied 0001_registry\napplied 0002_go_contract\napplied 0003_limits\n"
        "applied 0004_schedules\napplied 0005_faster_conversion\n"
    )
    assert await _exists(db, "kanthorq_stream_registry")
    again = await cli("--dsn", dsn, "migrate", "up", cwd=tmp_path)
    assert (again.code, again.out) == (0, "nothing to apply: the schema is up to date\n")

    everything = await cli("migrate", "down", "--all", "--yes", "--dsn", dsn, cwd=tmp_path)
    assert everything.code == 0
    assert everything.out == (
        "reverted 0005_faster_conversion\nreverted 0004_schedules\nreverted 0003_limits\n"
        "reverted 0002_go_contract\nreverted 0001_registry\n"
    )
    assert not await _exists(db, "kanthorq_consumer_registry")
    nothing = await cli("migrate", "down", "--yes", "--dsn", dsn, cwd=tmp_path)
    assert (nothing.code, nothing.out) == (0, "nothing to revert: no migration is applied\n")


# ---- run: finding the app -------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "code", "needles"),
    [
        ("no_such_module_xyz:app", 2, ["'no_such_module_xyz'"]),
        ("pkg.missing:app", 2, ["'pkg.missing'"]),
        ("empty:app", 2, ["'empty'", "'app'"]),
        ("holder:thing", 2, ["'holder:thing'", "int", "kanthorq.App"]),
        ("no_colon", 2, ["'no_colon'", "module:attribute"]),
        ("broken:app", 1, ["'broken'", "ZeroDivisionError", "--debug"]),
        ("valid:app --consumer nope", 2, ["'nope'"]),
    ],
)
async def test_run_bad_app(target: str, code: int, needles: list[str], tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "empty.py").write_text("")
    (tmp_path / "holder.py").write_text("thing = 42\n")
    (tmp_path / "broken.py").write_text("import kanthorq\napp = kanthorq.App()\n1 / 0\n")
    (tmp_path / "valid.py").write_text(
        "import kanthorq\napp = kanthorq.App()\n"
        "@app.subscribe('a.b', consumer='work')\nasync def work(msg): pass\n"
    )
    result = await cli("run", *target.split(), "--dsn", NOWHERE, cwd=tmp_path)
    assert_clean_error(result, code, *needles)


# ---- run: signals ---------------------------------------------------------------------

WORKER_APP = """
import asyncio

import kanthorq

# the DSN points nowhere: `kanthorq run --dsn` must override it
app = kanthorq.App("{nowhere}", poll_interval=0.2, shutdown_timeout={shutdown_timeout})


@app.subscribe("job.*", consumer="work", concurrency=10, visibility_timeout=300)
async def work(msg: kanthorq.Message) -> None:
    if msg.event.subject == "job.long":
        await asyncio.sleep(30)
"""


def write_worker_app(folder: Path, shutdown_timeout: float) -> None:
    text = WORKER_APP.format(nowhere=NOWHERE, shutdown_timeout=shutdown_timeout)
    (folder / "worker_app.py").write_text(textwrap.dedent(text))


async def publish_jobs(make_app: Callable[..., kanthorq.App], short: int) -> str:
    async with make_app() as app:
        await app.publish_many([("job.short", b"s")] * short)
        return await app.publish("job.long", b"l")


async def consumer_states(db: asyncpg.Connection) -> dict[int, int]:
    """The consumer's task counts by state ({} until ``kanthorq run`` registers it)."""
    consumer_id = await db.fetchval("SELECT id FROM kanthorq_consumer_registry WHERE name = 'work'")
    if consumer_id is None:
        return {}
    rows = await db.fetch(
        f'SELECT state, count(*) AS n FROM "kanthorq_{consumer_id}" GROUP BY state'
    )
    return {row["state"]: row["n"] for row in rows}


def reached(
    proc: asyncio.subprocess.Process, db: asyncpg.Connection, want: dict[int, int]
) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        assert proc.returncode is None, f"kanthorq run exited early with {proc.returncode}"
        return await consumer_states(db) == want

    return check


async def test_run_sigterm_shuts_down_gracefully(
    dsn: str,
    db: asyncpg.Connection,
    make_app: Callable[..., kanthorq.App],
    tmp_path: Path,
) -> None:
    shutdown_timeout = 1.0
    write_worker_app(tmp_path, shutdown_timeout)
    async with spawn("run", "worker_app:app", "--dsn", dsn, cwd=tmp_path) as proc:
        long_id = await publish_jobs(make_app, short=5)
        want = {TaskState.COMPLETED: 5, TaskState.RUNNING: 1}
        await wait_until(reached(proc, db, want), timeout=20)

        loop = asyncio.get_running_loop()
        started = loop.time()
        proc.send_signal(signal.SIGTERM)
        _out, err = await asyncio.wait_for(proc.communicate(), shutdown_timeout + 5)
        elapsed = loop.time() - started
    assert proc.returncode == 0, err.decode()
    assert shutdown_timeout * 0.9 <= elapsed < shutdown_timeout + 4, elapsed
    assert "Traceback" not in err.decode()

    table = await task_table(db, "work")
    rows = await db.fetch(f"SELECT event_id, state, schedule_at FROM {table}")
    by_state: dict[int, list[str]] = {}
    for row in rows:
        by_state.setdefault(row["state"], []).append(row["event_id"])
    assert {state: len(ids) for state, ids in by_state.items()} == {
        TaskState.COMPLETED: 5,
        TaskState.RETRYABLE: 1,
    }
    assert by_state[TaskState.RETRYABLE] == [long_id]
    # handed back at once: due now, not after the 300 s visibility timeout
    [long_task] = [row for row in rows if row["event_id"] == long_id]
    assert long_task["schedule_at"] <= now_ms()


async def test_run_second_sigint_exits_at_once(
    dsn: str,
    db: asyncpg.Connection,
    make_app: Callable[..., kanthorq.App],
    tmp_path: Path,
) -> None:
    write_worker_app(tmp_path, shutdown_timeout=30)
    async with spawn("run", "worker_app:app", "--dsn", dsn, cwd=tmp_path) as proc:
        await publish_jobs(make_app, short=1)
        want = {TaskState.COMPLETED: 1, TaskState.RUNNING: 1}
        await wait_until(reached(proc, db, want), timeout=20)

        proc.send_signal(signal.SIGINT)
        assert proc.stderr is not None
        await asyncio.wait_for(_line_with(proc.stderr, b"shutting down gracefully"), 10)
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 5)  # not the 30 s grace period
    assert proc.returncode == 128 + signal.SIGINT, err.decode()
    assert b"exiting at once" in err
    # nothing was handed back: the task stays running until its visibility timeout
    assert await consumer_states(db) == want


async def _line_with(stream: asyncio.StreamReader, needle: bytes) -> bytes:
    while True:
        line = await stream.readline()
        assert line, f"stream ended before a line with {needle!r}"
        if needle in line:
            return line


async def test_run_with_a_missing_app_dir_is_usage_error(tmp_path: Path) -> None:
    result = await cli("run", "app:app", "--app-dir", "no/such/dir", "--dsn", NOWHERE, cwd=tmp_path)
    assert_clean_error(result, 2, "'no/such/dir'", "not a directory")


async def test_run_missing_module_names_the_app_dir(tmp_path: Path) -> None:
    (tmp_path / "apps").mkdir()
    result = await cli("run", "nothere:app", "--app-dir", "apps", "--dsn", NOWHERE, cwd=tmp_path)
    assert_clean_error(result, 2, "'nothere'", str(tmp_path / "apps"))


async def test_run_dsn_replaces_a_malformed_environment_dsn(
    dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    (tmp_path / "envapp.py").write_text(
        "import kanthorq\napp = kanthorq.App()  # reads the malformed $KANTHORQ_DSN\n"
        "@app.subscribe('a.b', consumer='work')\nasync def work(msg): pass\n"
    )
    async with spawn(
        "run", "envapp:app", "--dsn", dsn, cwd=tmp_path, env_dsn="mysql://user@nowhere/db"
    ) as proc:

        async def registered() -> bool:
            assert proc.returncode is None, await proc.communicate()
            name = "SELECT name FROM kanthorq_consumer_registry WHERE name = 'work'"
            return await db.fetchval(name) == "work"

        await wait_until(registered, timeout=20)
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0


async def test_pub_into_a_closed_pipe_exits_quietly(dsn: str, tmp_path: Path) -> None:
    (tmp_path / "lines.txt").write_text("".join(f"line {i}\n" for i in range(20_000)))
    script = (
        f"cat lines.txt | {sys.executable} -m kanthorq pub a.b --lines --dsn '{dsn}' "
        "2>stderr.txt | head -1 >/dev/null; exit ${PIPESTATUS[1]}"
    )
    proc = await asyncio.create_subprocess_exec("bash", "-c", script, cwd=tmp_path, env=_env())
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    assert "error" not in (tmp_path / "stderr.txt").read_text()
