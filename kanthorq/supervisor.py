"""``kanthorq run --workers N``: N worker processes of one app, kept alive.

A Python worker is bound to one core; the supervisor runs N copies of ``kanthorq run``
(the same command with ``--workers 1``), each a whole worker: its own connections, its own
poll, its share of the claims (which ``FOR UPDATE SKIP LOCKED`` keeps apart). It restarts a
child that dies, after a backoff that grows while the child keeps dying, and logs why; it
gives up on a child that dies too often in a short time, stops the others, and exits 1.
SIGINT and SIGTERM are passed to every child, which drains and hands back as a single
process does; the supervisor waits for them (the app's shutdown_timeout, and a grace), and
exits 0 when every child stopped cleanly. With ``--metrics-port P`` child ``i`` serves its
metrics and health on port ``P + i`` (the supervisor logs which).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

RESTART_BACKOFF = (1.0, 30.0)  # the first delay, and the longest
STEADY = 60.0  # a child that ran this long has its backoff reset
GIVE_UP = 5  # deaths within STEADY seconds after which a child is not restarted
STOP_GRACE = 10.0  # seconds beyond the shutdown timeout before the stragglers are killed
WORKER_INDEX = "KANTHORQ_WORKER_INDEX"
SUPERVISOR_PID = "KANTHORQ_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1


def worker_count(value: str) -> int:
    """``--workers``: a number from 1, or ``auto`` (the CPUs this process may use)."""
    if value.strip().lower() == "auto":
        return max(len(os.sched_getaffinity(0)), 1)
    count = int(value)
    if count < 1:
        raise ValueError(f"--workers must be 1 or more, or auto, not {value}")
    return count


def child_argv(argv: Sequence[str], index: int) -> list[str]:
    """The command of child ``index``: ``argv`` with ``--workers 1``, and its own port."""
    out: list[str] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, eq, value = arg.partition("=")
        if name == "--workers":
            if not eq and args:
                args.pop(0)
            continue
        if name == "--metrics-port":
            if not eq:
                value = args.pop(0) if args else ""
            out.append(f"--metrics-port={_port_plus(value, index)}")
            continue
        out.append(arg)
    return [*out, "--workers", "1"]


def _port_plus(address: str, index: int) -> str:
    host, colon, port = address.rpartition(":")
    return f"{host}{colon}{int(port) + index}"


@dataclass
class Child:
    index: int
    argv: list[str]
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0
    deaths: list[float] = field(default_factory=list)
    backoff: float = RESTART_BACKOFF[0]

    async def start(self) -> None:
        env = {
            **os.environ,
            WORKER_INDEX: str(self.index),
            SUPERVISOR_PID: str(os.getpid()),
        }
        # a session of its own: a terminal's Ctrl-C reaches the supervisor only, which passes
        # it on once (a child would take a second SIGINT as "exit at once")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kanthorq", *self.argv, env=env, start_new_session=True
        )
        self.started = time.monotonic()
        logger.info("worker %d started (pid %d)", self.index, self.proc.pid)


def _how(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


class Supervisor:
    def __init__(self, argv: Sequence[str], count: int, shutdown_timeout: float) -> None:
        self._children = [Child(i, child_argv(argv, i)) for i in range(count)]
        self._shutdown_timeout = shutdown_timeout
        self._stopping = asyncio.Event()
        self._signaled: set[int] = set()  # the children's pids that had a signal passed on
        self._failed: str | None = None  # why a child could not be kept alive

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """SIGINT or SIGTERM: pass it to every child. A second one is passed on too, and a
        child exits at once on it, as ``kanthorq run`` does on its own."""
        self._stopping.set()
        self._signal_children(signum, again=True)

    def _signal_children(self, signum: int, *, again: bool) -> None:
        for child in self._children:
            proc = child.proc
            if proc is None or proc.returncode is not None:
                continue
            if again or proc.pid not in self._signaled:
                self._signaled.add(proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signum)

    async def run(self) -> int:
        for child in self._children:
            await child.start()
        watchers = [asyncio.create_task(self._watch(child)) for child in self._children]
        await self._stopping.wait()
        # those that got no signal yet: started since, or when giving up on a child
        self._signal_children(signal.SIGTERM, again=False)
        clean = await self._wait_all()
        for watcher in watchers:
            watcher.cancel()
        if self._failed is not None:
            logger.error("stopped: %s", self._failed)
            return 1
        return 0 if clean else 1

    async def _watch(self, child: Child) -> None:
        """Restart ``child`` when it dies, until the supervisor stops or gives up."""
        while not self._stopping.is_set():
            assert child.proc is not None
            code = await child.proc.wait()
            if self._stopping.is_set():
                return
            now = time.monotonic()
            if now - child.started > STEADY:
                child.backoff = RESTART_BACKOFF[0]
            child.deaths = [t for t in child.deaths if now - t < STEADY] + [now]
            if len(child.deaths) >= GIVE_UP:
                self._failed = (
                    f"worker {child.index} {_how(code)}, and died {len(child.deaths)} times "
                    f"in {STEADY:g}s: it could not be kept alive"
                )
                self._stopping.set()
                return
            logger.warning(
                "worker %d (pid %d) %s; restarting it in %.0fs",
                child.index,
                child.proc.pid,
                _how(code),
                child.backoff,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), child.backoff)
            child.backoff = min(child.backoff * 2, RESTART_BACKOFF[1])
            if not self._stopping.is_set():
                await child.start()

    async def _wait_all(self) -> bool:
        """Wait for every child to exit (killing stragglers); whether all exited 0."""
        procs = [c.proc for c in self._children if c.proc is not None]
        waits = [asyncio.create_task(p.wait()) for p in procs]
        _, pending = await asyncio.wait(waits, timeout=self._shutdown_timeout + STOP_GRACE)
        for proc in procs:
            if proc.returncode is None:
                logger.error("worker (pid %d) did not stop in time: killing it", proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        if pending:
            await asyncio.wait(pending)
        return all(p.returncode == 0 for p in procs)


async def supervise(argv: Sequence[str], count: int, shutdown_timeout: float) -> int:
    """Run ``count`` children of ``kanthorq`` ``argv`` until SIGINT or SIGTERM."""
    supervisor = Supervisor(argv, count, shutdown_timeout)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, supervisor.stop, signum)
    logger.info("supervising %d workers", count)
    return await supervisor.run()


def follow_supervisor() -> None:
    """In a child: get SIGTERM (a graceful stop) if the supervisor dies, even by SIGKILL
    (Linux's PR_SET_PDEATHSIG; elsewhere nothing), and stop now if it is gone already."""
    expected = os.environ.get(SUPERVISOR_PID)
    if not expected:
        return
    try:
        import ctypes

        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if str(os.getppid()) != expected:
        os.kill(os.getpid(), signal.SIGTERM)
