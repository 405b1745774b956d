"""What a reader needs to trust a table: the machine, the server, the code measured."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import kanthorq
from benchmarks.config import Config
from benchmarks.db import server_facts


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
            cwd=Path(kanthorq.__file__).parent,
        )
    except (OSError, subprocess.SubprocessError):
        return "?"
    return out.stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _memory_gb() -> str:
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return "?"
    return f"{pages / 1024**3:.0f} GiB"


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def kanthorq_code() -> str:
    """The code measured: its folder, commit and whether it had uncommitted changes.

    ``$KANTHORQ_BENCH_CODE`` names it instead (a run from an exported tree has no git)."""
    named = os.environ.get("KANTHORQ_BENCH_CODE")
    if named:
        return f"{Path(kanthorq.__file__).parent}: {named}"
    commit = _git("rev-parse", "--short", "HEAD")
    if commit == "?":
        return f"{Path(kanthorq.__file__).parent} (not a git checkout)"
    dirty = _git("status", "--porcelain", "--", "kanthorq", "sql")
    state = "with uncommitted changes to kanthorq/ or sql/" if dirty else "clean"
    return f"{Path(kanthorq.__file__).parent} at {commit} ({state})"


async def collect(cfg: Config, source: str) -> dict[str, Any]:
    facts = await server_facts(cfg.server_dsn)
    server = (
        f"{facts['version']} ({source}); fsync={facts['fsync']}, "
        f"synchronous_commit={facts['synchronous_commit']}, "
        f"shared_buffers={facts['shared_buffers']}"
    )
    return {
        "machine": f"{os.cpu_count()} CPUs ({_cpu_model()}), {_memory_gb()}, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
        "server": server,
        "kanthorq": kanthorq_code(),
        "peers": f"pgqueuer {_version('pgqueuer')}, procrastinate {_version('procrastinate')}, "
        f"asyncpg {_version('asyncpg')}, psycopg {_version('psycopg')}",
        "sizes": (
            f"W1/W2/W4 {cfg.events} events in batches of {cfg.batch}; concurrency "
            f"{cfg.concurrency}; W3 {cfg.latency_count} x {cfg.latency_gap * 1000:.0f} ms; "
            f"W4 {cfg.fanout_consumers} consumers; W5 {cfg.publishers} publishers x "
            f"{cfg.publish_seconds:g} s; W6 backlog {cfg.backlog}, slice {cfg.backlog_slice}, "
            f"in {min(cfg.backlog_rounds, cfg.rounds)} round(s)"
        ),
        "rounds": cfg.rounds,
        "workloads": list(cfg.only),
        "systems": list(cfg.systems),
        "quick": cfg.quick,
    }
