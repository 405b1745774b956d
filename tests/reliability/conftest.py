"""The battery's harness: a ledger, worker processes, and ways to move time forward.

Every event body carries its sequence number (``{"seq": n}``). Handlers record
``(event_id, seq, attempt, pid)`` in the ``ledger`` table inside the transaction that acks
the task, so a ledger row exists exactly when a run's completion committed. The ``started``
table records each run as it begins (outside any transaction), so runs that never finished
can be counted too. Milestones are awaited by polling the database; time moves forward by
UPDATE-ing the tasks' timestamps (milliseconds since the epoch), never by sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import kanthorq
from tests.conftest import task_table
from tests.reliability.private_pg import PrivateServer

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS ledger (
    id       BIGSERIAL PRIMARY KEY,
    event_id TEXT   NOT NULL,
    seq      BIGINT NOT NULL,
    attempt  INT    NOT NULL,
    pid      INT    NOT NULL,
    at       BIGINT NOT NULL DEFAULT kanthorq_now_ms()
);
CREATE TABLE IF NOT EXISTS started (
    id       BIGSERIAL PRIMARY KEY,
    event_id TEXT   NOT NULL,
    attempt  INT    NOT NULL,
    pid      INT    NOT NULL,
    at       BIGINT NOT NULL DEFAULT kanthorq_now_ms()
);
"""

# The app that `kanthorq run` processes load. Its knobs come from the environment, so one
# module serves every test; KQ_LONG_MS makes bodies marked "long" sleep that long.
# KQ_TRACEMALLOC_DIR (the soak's witness only) records its memory there (memwatch.py).
WORKER_APP = """
import asyncio
import os

import kanthorq

E = os.environ
PID = os.getpid()
if E.get("KQ_TRACEMALLOC_DIR"):
    import rel_memwatch

    rel_memwatch.start(
        E["KQ_TRACEMALLOC_DIR"],
        first=float(E.get("KQ_TRACEMALLOC_FIRST", "60")),
        every=float(E.get("KQ_TRACEMALLOC_EVERY", "600")),
    )
app = kanthorq.App(
    poll_interval=float(E.get("KQ_POLL", "0.5")),
    shutdown_timeout=float(E.get("KQ_SHUTDOWN", "5")),
    pool_size=int(E.get("KQ_POOL", "10")),
    retention_interval=float(E.get("KQ_RETENTION_INTERVAL", "600")),
)
if E.get("KQ_RETAIN_TASKS"):
    app.retain(tasks=float(E["KQ_RETAIN_TASKS"]))
if E.get("KQ_PERIODIC_EVERY"):
    from datetime import timedelta

    app.periodic(
        subject="beat.tick", every=timedelta(seconds=float(E["KQ_PERIODIC_EVERY"])), name="beat"
    )
SLEEP_MS = float(E.get("KQ_SLEEP_MS", "0"))
LONG_MS = float(E.get("KQ_LONG_MS", "0"))
RECORD_START = E.get("KQ_STARTED", "1") == "1"


@app.subscribe(
    E.get("KQ_SUBJECTS", "job.>"),
    consumer=E.get("KQ_CONSUMER", "jobs"),
    concurrency=int(E.get("KQ_CONCURRENCY", "10")),
    visibility_timeout=float(E.get("KQ_VT", "300")),
    max_retries=int(E.get("KQ_MAX_RETRIES", "20")),
    backoff=kanthorq.Fixed(delay=float(E.get("KQ_BACKOFF", "0.2"))),
    max_running=int(E["KQ_MAX_RUNNING"]) if E.get("KQ_MAX_RUNNING") else None,
    rate=kanthorq.Rate(int(E["KQ_RATE"].split("/")[0]), float(E["KQ_RATE"].split("/")[1]))
    if E.get("KQ_RATE")
    else None,
)
async def handle(msg: kanthorq.Message) -> None:
    body = msg.json()
    attempt = msg.task.attempt_count
    if RECORD_START:
        await app.pool.execute(
            "INSERT INTO started (event_id, attempt, pid) VALUES ($1, $2, $3)",
            msg.event.id, attempt, PID,
        )
    sleep_ms = LONG_MS if body.get("long") and LONG_MS else body.get("sleep_ms", SLEEP_MS)
    if sleep_ms:
        await asyncio.sleep(sleep_ms / 1000)
    async with app.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO ledger (event_id, seq, attempt, pid) VALUES ($1, $2, $3, $4)",
            msg.event.id, body["seq"], attempt, PID,
        )
        await msg.ack(conn=conn)
"""


async def create_ledger(conn: asyncpg.Connection) -> None:
    await conn.execute(LEDGER_DDL)


@pytest.fixture
async def ledger_db(db: asyncpg.Connection) -> asyncpg.Connection:
    """The test's connection, with the ledger and started tables created."""
    await create_ledger(db)
    return db


def bodies(count: int, start: int = 0, **extra: Any) -> list[dict[str, Any]]:
    return [{"seq": n, **extra} for n in range(start, start + count)]


async def publish_seq(
    app: kanthorq.App, count: int, *, subject: str = "job.run", start: int = 0, **extra: Any
) -> list[str]:
    """Publish ``count`` events whose bodies carry their sequence numbers, in batches."""
    ids: list[str] = []
    items = [(subject, body) for body in bodies(count, start, **extra)]
    for at in range(0, len(items), 1000):
        ids += await app.publish_many(items[at : at + 1000])
    return ids


# ---- what the database says ------------------------------------------------------------


async def count_where(conn: asyncpg.Connection, consumer: str, where: str) -> int:
    table = await task_table(conn, consumer)
    value = await conn.fetchval(f"SELECT count(*) FROM {table} WHERE {where}")
    return int(value)


async def ledger_count(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM ledger"))


@dataclass
class Audit:
    """What the ledger and the tables say at the end of a run."""

    events: int
    tasks: int
    completed: int
    unconverted: list[str]  # events without a task
    without_ledger: list[str]  # completed tasks without a committed run
    ledger_duplicates: list[tuple[str, int]]  # events whose completion committed twice
    runs: int  # handler runs started (the started table)
    states: dict[int, int] = field(default_factory=dict)


async def audit(conn: asyncpg.Connection, consumer: str, stream: str = "default") -> Audit:
    from tests.conftest import stream_table

    tasks = await task_table(conn, consumer)
    events = await stream_table(conn, stream)
    states = {
        r["state"]: r["n"]
        for r in await conn.fetch(f"SELECT state, count(*) AS n FROM {tasks} GROUP BY state")
    }
    unconverted = await conn.fetch(
        f"SELECT e.id FROM {events} e LEFT JOIN {tasks} t ON t.event_id = e.id "
        "WHERE t.event_id IS NULL"
    )
    without = await conn.fetch(
        f"SELECT t.event_id FROM {tasks} t WHERE t.state = 101 AND NOT EXISTS "
        "(SELECT 1 FROM ledger l WHERE l.event_id = t.event_id)"
    )
    dups = await conn.fetch(
        "SELECT event_id, count(*) AS n FROM ledger GROUP BY event_id HAVING count(*) > 1"
    )
    return Audit(
        events=int(await conn.fetchval(f"SELECT count(*) FROM {events}")),
        tasks=sum(states.values()),
        completed=states.get(101, 0),
        unconverted=[r["id"] for r in unconverted],
        without_ledger=[r["event_id"] for r in without],
        ledger_duplicates=[(r["event_id"], r["n"]) for r in dups],
        runs=int(await conn.fetchval("SELECT count(*) FROM started")),
        states=states,
    )


async def age_running(
    conn: asyncpg.Connection, consumer: str, where: str, by_ms: int, *args: object
) -> int:
    """Move time forward for the running tasks matching ``where`` (its parameters start at
    ``$2``): their claims happened ``by_ms`` earlier, and their deadlines are ``by_ms``
    nearer. Returns how many were moved."""
    table = await task_table(conn, consumer)
    status = await conn.execute(
        f"UPDATE {table} SET attempted_at = attempted_at - $1, deadline_at = deadline_at - $1 "
        f"WHERE state = 2 AND ({where})",
        by_ms,
        *args,
    )
    return int(status.split()[-1])


# ---- worker processes ------------------------------------------------------------------

FAKETIME_LIBS = (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
)


def faketime_lib() -> str | None:
    """libfaketime (Debian's package ``faketime``), which moves a process's wall clock."""
    return next((lib for lib in FAKETIME_LIBS if os.path.exists(lib)), None)


needs_faketime = pytest.mark.skipif(
    faketime_lib() is None,
    reason="libfaketime is not installed (Debian: apt-get install faketime); .ci/run installs it",
)


def skewed_clock(offset: str) -> dict[str, str]:
    """The environment that runs a process with its wall clock ``offset`` away (``+10m``):
    a host whose clock is wrong. Its monotonic clock is left alone."""
    lib = faketime_lib()
    assert lib is not None, "libfaketime is not installed"
    return {"LD_PRELOAD": lib, "FAKETIME": offset, "DONT_FAKE_MONOTONIC": "1"}


# Runs the worker through a launcher that first asks Linux to kill it when the test process
# dies (PR_SET_PDEATHSIG survives the exec), so a test run that is itself killed (a CI
# timeout) leaves no worker behind. Elsewhere prctl is missing and the fixture's finally
# still kills them.
LAUNCH = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL(None).prctl(1, signal.SIGKILL)\n"
    "except (OSError, AttributeError):\n"
    "    pass\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n"
)


class Worker:
    """One ``kanthorq run`` process; its output goes to a log file."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path, name: str) -> None:
        self.proc = proc
        self.log = log
        self.name = name

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self, tail: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
        self.proc.wait(10)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)


class Workers:
    """Starts ``kanthorq run`` processes on an app module written into a temporary folder,
    and kills whatever is left when the test ends."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[Worker] = []
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "rel_app.py").write_text(textwrap.dedent(WORKER_APP))
        shutil.copyfile(Path(__file__).with_name("memwatch.py"), folder / "rel_memwatch.py")

    def spawn(
        self,
        dsn: str,
        *,
        log_level: str = "INFO",
        clock: str | None = None,
        args: tuple[str, ...] = (),
        **knobs: object,
    ) -> Worker:
        """``clock``: the process's wall clock offset (libfaketime's ``+10m``, ``-10m``).
        ``args``: more options of ``kanthorq run`` (``--workers 2``)."""
        env = dict(os.environ)
        env.pop("KANTHORQ_DSN", None)
        env.update({f"KQ_{k.upper()}": str(v) for k, v in knobs.items()})
        if clock is not None:
            env.update(skewed_clock(clock))
        name = f"w{len(self.started)}"
        log = self.folder / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    LAUNCH,
                    "-m",
                    "kanthorq",
                    "run",
                    "rel_app:app",
                    "--app-dir",
                    str(self.folder),
                    "--dsn",
                    dsn,
                    "--log-level",
                    log_level,
                    *args,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.folder,
                env=env,
            )
        worker = Worker(proc, log, name)
        self.started.append(worker)
        return worker

    def logs(self) -> str:
        return "\n".join(f"--- {w.name} (pid {w.pid})\n{w.output()}" for w in self.started)

    def kill_all(self) -> None:
        for worker in self.started:
            if worker.alive():
                worker.proc.send_signal(signal.SIGKILL)
        for worker in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.proc.wait(10)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(tmp_path / "workers")
    try:
        yield pool
    finally:
        pool.kill_all()


@pytest.fixture
async def private_dsn() -> AsyncIterator[tuple[str, PrivateServer]]:
    server = PrivateServer()
    try:
        await asyncio.to_thread(server.init)
        server.start()  # in this thread: the server lives as long as it
        admin = await asyncpg.connect(server.dsn)
        try:
            await admin.execute("CREATE DATABASE kq")
        finally:
            await admin.close()
        yield server.dsn.rsplit("/", 1)[0] + "/kq", server
    finally:
        await asyncio.to_thread(server.destroy)


@pytest.fixture
async def opened(dsn: str) -> AsyncIterator[kanthorq.App]:
    """An open app on the test's database, for publishing (it runs no workers)."""
    app = kanthorq.App(dsn, poll_interval=0.5)
    async with app:
        yield app


def monotonic() -> float:
    return time.monotonic()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The soak is opt-in: a plain ``pytest`` run leaves it out unless ``-m`` names it."""
    if "soak" in (config.getoption("markexpr") or ""):
        return
    soak = [item for item in items if item.get_closest_marker("soak")]
    if soak:
        config.hook.pytest_deselected(items=soak)
        items[:] = [item for item in items if not item.get_closest_marker("soak")]
