"""What a hard exit leaves of the embedded PostgreSQL, and the next process that meets it.

A process killed without running its exit handlers (SIGKILL, a second Ctrl-C) leaves the
server running, its pid in pgserver's list of handles (``pgdata/.handle_pids.json``), and,
when the server dies too, a ``postmaster.pid`` whose pid is dead or later reused. Each case
runs real servers in child processes under a temporary $KANTHORQ_HOME; whatever server a
test leaves is killed when it ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.test_embedded import PUBLISH_AND_READ, child_env, run_child

pytestmark = pytest.mark.timeout(180)

HOLD = """
import asyncio, sys
import kanthorq

async def main():
    async with kanthorq.App() as app:
        print(await app.publish("left.behind", b"a"), flush=True)
        await asyncio.to_thread(sys.stdin.readline)     # until it is killed

asyncio.run(main())
"""


def postmasters(pgdata: Path) -> list[psutil.Process]:
    """The PostgreSQL servers running on ``pgdata``, whatever their pid files say."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "postgres" and str(pgdata) in (proc.info["cmdline"] or []):
            found.append(proc)
    return found


@pytest.fixture
def home(embedded_home: Path) -> Iterator[Path]:
    pgdata = embedded_home.resolve() / "pgdata"
    try:
        yield embedded_home
    finally:
        for proc in postmasters(pgdata):
            proc.send_signal(signal.SIGQUIT)  # immediate shutdown: it ends its children too
        psutil.wait_procs(postmasters(pgdata), timeout=30)
        assert not postmasters(pgdata)


def pid_file(home: Path) -> list[str]:
    return (home / "pgdata" / "postmaster.pid").read_text().splitlines()


def running(home: Path) -> bool:
    return bool(postmasters(home.resolve() / "pgdata"))


def stopped(home: Path) -> bool:
    """Whether the servers on ``home`` end within 30 s (``pg_ctl stop -w`` returns when the
    server has removed its pid file, just before its process ends)."""
    _, alive = psutil.wait_procs(postmasters(home.resolve() / "pgdata"), timeout=30)
    return not alive


def publish_and_read(home: Path) -> dict[str, object]:
    done = run_child(PUBLISH_AND_READ, home)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def kill_a_holder(home: Path) -> str:
    """Start a process that holds the server and publishes, then SIGKILL it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD],
        env=child_env(home),
        cwd=home,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        event_id = holder.stdout.readline().strip()
        assert event_id.startswith("event_"), holder.communicate(timeout=30)
    finally:
        holder.kill()
        holder.communicate(timeout=30)
    return event_id


def test_a_killed_holder_leaves_a_server_the_next_process_reuses_and_stops(home: Path) -> None:
    first = kill_a_holder(home)
    assert running(home)  # the hard exit left it running, and its pid in the handle list
    server = psutil.Process(int(pid_file(home)[0]))

    result = publish_and_read(home)  # publishes and reads on the server it found
    rows = result["rows"]
    assert isinstance(rows, list)
    assert first in [row[0] for row in rows]
    assert len(rows) == 3
    assert not psutil.wait_procs([server], timeout=30)[1]  # the last live holder stopped it
    assert stopped(home)
    assert json.loads((home / "pgdata" / ".handle_pids.json").read_text()) == []


def a_dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def stop(home: Path) -> None:
    """Stop the server as something outside kanthorq would (a fast shutdown)."""
    found = postmasters(home.resolve() / "pgdata")
    for proc in found:
        proc.send_signal(signal.SIGINT)
    assert stopped(home)


def died_with(home: Path, pid: int) -> None:
    """A server's postmaster.pid and socket lock, left as if its server had died, with
    ``pid`` in them; and a killed holder's pid in the handle list."""
    kill_a_holder(home)
    lines = pid_file(home)
    socket_lock = Path(lines[4]) / f".s.PGSQL.{lines[3]}.lock"
    lock = socket_lock.read_text().splitlines()
    stop(home)  # removes both files
    lines[0] = lock[0] = str(pid)
    (home / "pgdata" / "postmaster.pid").write_text("\n".join(lines) + "\n")
    socket_lock.write_text("\n".join(lock) + "\n")


def rows_after_restart(home: Path) -> int:
    rows = publish_and_read(home)["rows"]
    assert isinstance(rows, list)
    assert stopped(home)  # and it stopped the server it started
    return len(rows)


def test_a_stale_pid_file_whose_server_is_dead(home: Path) -> None:
    died_with(home, a_dead_pid())
    assert rows_after_restart(home) == 3  # the killed holder's event and this run's two


def test_a_stale_pid_file_whose_pid_another_process_has_taken(home: Path) -> None:
    other = subprocess.Popen(["sleep", "120"])  # alive, and no PostgreSQL server
    try:
        died_with(home, other.pid)
        assert rows_after_restart(home) == 3
        assert other.poll() is None  # left alone
    finally:
        other.kill()
        other.wait()


def test_a_truncated_pid_file(home: Path) -> None:
    """A server killed while it started leaves a pid file of fewer lines."""
    died_with(home, a_dead_pid())
    (home / "pgdata" / "postmaster.pid").write_text(f"{a_dead_pid()}\n")
    assert rows_after_restart(home) == 3


def test_a_stale_handle_whose_pid_another_process_has_taken(home: Path) -> None:
    """A handle left by a killed holder, whose pid now belongs to a process that started
    after the list was written, does not keep the server running for ever."""
    kill_a_holder(home)
    handles = home / "pgdata" / ".handle_pids.json"
    other = subprocess.Popen(["sleep", "120"])
    try:
        handles.write_text(json.dumps([other.pid]))
        os.utime(handles, (time.time() - 60, time.time() - 60))  # written a minute ago
        assert rows_after_restart(home) == 3
    finally:
        other.kill()
        other.wait()
