"""The embedded PostgreSQL server used when no DSN is given anywhere.

It comes from the optional extra ``kanthorq[embedded]`` (PyPI ``pgserver``) and keeps its
data under ``./.kanthorq/`` or ``$KANTHORQ_HOME``. Several processes share one server: each
holds a handle, and the server stops when the last one exits.

A process killed before its exit handlers run (SIGKILL, a second Ctrl-C) leaves things
behind, which the next start clears (``_clear_leftovers``) before pgserver looks at them:
- its pid in pgserver's list of handles (``pgdata/.handle_pids.json``), so no later process
  would ever be the last one and stop the server: the pids of processes that have ended, or
  that started after the list was last written (the pid was reused), are dropped. The
  server it left running is found through its ``postmaster.pid`` and reused.
- when the server died as well, a ``postmaster.pid`` (and a socket lock file) naming a pid
  that is dead or now another process's. pgserver takes any live pid for its server and
  hands out a DSN nobody listens on, and PostgreSQL refuses to start while the pid lives;
  a truncated file (a server killed while starting) stops pgserver too. Such files are
  removed. PostgreSQL still refuses to start while an old server's processes hold its shared
  memory: it finds that memory by the data directory, not through this file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from kanthorq.errors import EmbeddedUnavailable

logger = logging.getLogger(__name__)

ENV_HOME = "KANTHORQ_HOME"
HANDLES = ".handle_pids.json"  # pgserver's list of the processes holding the server
PID_FILE = "postmaster.pid"
CLOCK_SLACK = 2.0  # seconds: a process's start time is known to about a clock tick
_servers: dict[Path, Any] = {}


def home() -> Path:
    return Path(os.environ.get(ENV_HOME) or ".kanthorq").resolve()


def start(data_home: Path | None = None) -> str:
    """Start (or join) the embedded server and return its DSN."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            import pgserver
    except ImportError:
        raise EmbeddedUnavailable(
            "no DSN was given: pass App(dsn=...) / --dsn, or set KANTHORQ_DSN; "
            "or install the embedded server with: pip install 'kanthorq[embedded]'"
        ) from None
    pgdata = ((data_home or home()) / "pgdata").resolve()
    if pgdata not in _servers:
        pgdata.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with _pgserver_lock(pgserver):
                _clear_leftovers(pgdata)
            _servers[pgdata] = pgserver.get_server(pgdata, cleanup_mode="stop")
    dsn = str(_servers[pgdata].get_uri())
    logger.info("using the embedded PostgreSQL at %s", dsn)
    return dsn


def _pgserver_lock(pgserver: Any) -> contextlib.AbstractContextManager[Any]:
    """The lock across processes that pgserver holds while it starts a server or lets go of
    one (so the handle list is not rewritten under it); none if a version lacks it."""
    lock = getattr(getattr(pgserver, "PostgresServer", None), "_lock", None)
    return lock if lock is not None else contextlib.nullcontext()


def _clear_leftovers(pgdata: Path) -> None:
    import psutil

    _prune_handles(pgdata / HANDLES, psutil)
    pid_file = pgdata / PID_FILE
    try:
        lines = pid_file.read_text().splitlines()
    except OSError:
        return
    if _is_our_server(_pid(lines), pgdata, psutil):
        return
    socket_dir = Path(lines[4]) if len(lines) > 4 and lines[4] else pgdata
    for lock in {*socket_dir.glob(".s.PGSQL.*.lock"), *pgdata.glob(".s.PGSQL.*.lock")}:
        if not _is_our_server(_pid(_read_lines(lock)), pgdata, psutil):
            lock.unlink(missing_ok=True)
    pid_file.unlink(missing_ok=True)
    logger.warning(
        "removed a stale %s of the embedded PostgreSQL (pid %s is not its server)",
        pid_file,
        lines[0] if lines else "missing",
    )


def _prune_handles(path: Path, psutil: Any) -> None:
    try:
        pids = json.loads(path.read_text())
        written = path.stat().st_mtime
    except (OSError, ValueError):
        return
    if not isinstance(pids, list):
        return  # not pgserver's format: leave it to pgserver
    live = [pid for pid in pids if _held_since(pid, written, psutil)]
    if live != pids:
        logger.info("dropped the embedded PostgreSQL's handles of ended processes: %s", pids)
        path.write_text(json.dumps(live))


def _held_since(pid: object, written: float, psutil: Any) -> bool:
    """Whether ``pid`` may still be the process that added itself to a list last written at
    ``written``: it runs, and it started before that."""
    try:
        started: float = psutil.Process(pid).create_time()
    except (psutil.Error, TypeError, ValueError):
        return False
    return started <= written + CLOCK_SLACK


def _is_our_server(pid: int | None, pgdata: Path, psutil: Any) -> bool:
    """Whether ``pid`` is a PostgreSQL server running on ``pgdata`` (when that cannot be
    seen, assume it is: the files are left alone)."""
    if pid is None:
        return False
    try:
        process = psutil.Process(pid)
        return bool(process.name() == "postgres" and str(pgdata) in process.cmdline())
    except psutil.AccessDenied:
        return True
    except psutil.Error:
        return False


def _pid(lines: list[str]) -> int | None:
    try:
        return int(lines[0])
    except (IndexError, ValueError):
        return None


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []
