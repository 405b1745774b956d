"""A worker process of one system, watched from the parent: its readiness, its output,
its memory (RSS, with psutil when installed) and CPU time, and an optional py-spy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.systems.base import WorkerOptions

# the folder that holds the benchmarks package (it is not installed: run it from there)
ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
MB = 1024 * 1024


def _psutil_process(pid: int) -> Any:
    try:
        import psutil  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        return None
    return psutil.Process(pid)


class WorkerProcess:
    def __init__(
        self,
        system: str,
        opts: WorkerOptions,
        *,
        count_queries: bool = False,
        profile: Path | None = None,
    ) -> None:
        self.argv = [
            sys.executable,
            "-m",
            "benchmarks.worker",
            system,
            f"--dsn={opts.dsn}",
            f"--mode={opts.mode}",
            f"--concurrency={opts.concurrency}",
            f"--consumers={opts.consumers}",
            f"--streams={opts.streams}",
        ] + (["--count-queries"] if count_queries else [])
        self.profile = profile
        self.proc: asyncio.subprocess.Process | None = None
        self.spy: asyncio.subprocess.Process | None = None
        self.ready_at = 0.0
        self.latencies: list[float] = []
        self.stats: dict[str, Any] = {}
        self.rss: list[int] = []
        self._ps: Any = None
        self._cpu_at_ready = 0.0
        self._reader: asyncio.Task[None] | None = None
        self._got_latency = asyncio.Event()

    async def start(self) -> None:
        """Start the process and wait for its ``READY``; the clock starts then."""
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdout=asyncio.subprocess.PIPE, cwd=ROOT
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), READY_TIMEOUT)
        if line.strip() != b"READY":
            raise RuntimeError(f"worker {self.argv[3]} did not start: {line!r}")
        self.ready_at = time.perf_counter()
        self._ps = _psutil_process(self.proc.pid)
        self._cpu_at_ready = self.cpu_seconds()
        self.sample()
        self._reader = asyncio.create_task(self._read())
        if self.profile is not None:
            await self._start_spy(self.profile)

    async def _start_spy(self, out: Path) -> None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        assert self.proc is not None
        self.spy = await asyncio.create_subprocess_exec(
            spy,
            "record",
            "--pid",
            str(self.proc.pid),
            "--idle",
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            str(out),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode().strip()
            if line.startswith("LAT "):
                self.latencies.append(float(line[4:]))
                self._got_latency.set()
            elif line.startswith("STATS "):
                self.stats = json.loads(line[6:])

    def sample(self) -> None:
        if self._ps is not None:
            with contextlib.suppress(Exception):
                self.rss.append(int(self._ps.memory_info().rss))

    def cpu_seconds(self) -> float:
        if self._ps is None:
            return 0.0
        with contextlib.suppress(Exception):
            times = self._ps.cpu_times()
            return float(times.user + times.system)
        return 0.0

    def cpu_since_ready(self) -> float:
        return self.cpu_seconds() - self._cpu_at_ready

    def memory(self) -> dict[str, float]:
        if not self.rss:
            return {}
        return {
            "rss_start_mb": self.rss[0] / MB,
            "rss_peak_mb": max(self.rss) / MB,
            "rss_end_mb": self.rss[-1] / MB,
        }

    async def wait_latencies(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.latencies) < count and time.monotonic() < deadline:
            self._got_latency.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._got_latency.wait(), deadline - time.monotonic())

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``STOP_TIMEOUT``; py-spy writes its file on SIGINT."""
        if self.spy is not None and self.spy.returncode is None:
            self.spy.send_signal(signal.SIGINT)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.spy.wait(), STOP_TIMEOUT)
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reader, 5.0)


class SupervisedProcess(WorkerProcess):
    """``python -m kanthorq run APP --workers N``: the supervisor and its N children, watched
    as one worker. Its readiness is not a ``READY`` line: the caller decides when the clock
    starts and calls :meth:`mark_ready`. RSS and CPU time are summed over the supervisor and
    every descendant (psutil's ``children(recursive=True)``), so the CPU % of N processes
    can exceed 100."""

    def __init__(self, app: str, opts: WorkerOptions, workers: int, env: dict[str, str]) -> None:
        super().__init__("", opts)
        self.argv = [
            sys.executable,
            "-m",
            "kanthorq",
            "run",
            app,
            f"--workers={workers}",
            f"--dsn={opts.dsn}",
            "--log-level=WARNING",  # as the single worker process logs
        ]
        self.env = env
        # the tree's stderr, read and closed by take_log()
        self.log = tempfile.TemporaryFile()  # noqa: SIM115
        self._cpu_base: dict[int, float] = {}
        self._seen: dict[int, Any] = {}  # every process of the tree seen, to reap at stop

    async def start(self) -> None:
        """Start the supervisor; it starts its children (the caller sees when they listen)."""
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=self.log,
            cwd=ROOT,
            env={**os.environ, **self.env},
        )
        self._ps = _psutil_process(self.proc.pid)

    def tree(self) -> list[Any]:
        """The supervisor and its descendants alive now (empty without psutil)."""
        if self._ps is None:
            return []
        procs = [self._ps]
        with contextlib.suppress(Exception):
            procs += self._ps.children(recursive=True)
        for p in procs:
            self._seen.setdefault(p.pid, p)
        return procs

    def mark_ready(self) -> None:
        """The clock starts now (``ready_at``): CPU time is counted from here, per process."""
        self.rss.clear()
        self.sample()
        self._cpu_base = {p.pid: _cpu(p) for p in self.tree()}
        self.ready_at = time.perf_counter()

    def sample(self) -> None:
        total = 0
        for p in self.tree():
            with contextlib.suppress(Exception):
                total += int(p.memory_info().rss)
        if total:
            self.rss.append(total)

    def cpu_seconds(self) -> float:
        return sum(_cpu(p) for p in self.tree())

    def cpu_since_ready(self) -> float:
        """CPU seconds of the tree since :meth:`mark_ready` (a child that died meanwhile
        takes its share with it; a child started since counts in full)."""
        return sum(_cpu(p) - self._cpu_base.get(p.pid, 0.0) for p in self.tree())

    def children_alive(self) -> int:
        """The supervisor's descendants alive now (0 without psutil)."""
        return max(len(self.tree()) - 1, 0)

    async def stop(self) -> None:
        """SIGTERM to the supervisor, which passes it to its children and waits for them;
        then any process of the tree still alive is killed, so none is left behind."""
        self.tree()  # remember the children before the supervisor goes
        await super().stop()
        for p in self._seen.values():
            with contextlib.suppress(Exception):
                if p.is_running() and p.status() != "zombie":
                    p.kill()

    def take_log(self) -> list[str]:
        """What the tree wrote to stderr, less each child's expected notice of the stop
        (once: the file is closed)."""
        with self.log:
            self.log.seek(0)
            lines = self.log.read().decode(errors="replace").splitlines()
        return [line for line in lines if "received SIGTERM: shutting down gracefully" not in line]


def _cpu(p: Any) -> float:
    with contextlib.suppress(Exception):
        times = p.cpu_times()
        return float(times.user + times.system)
    return 0.0
