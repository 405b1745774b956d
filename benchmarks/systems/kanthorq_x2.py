"""kanthorq drained by two worker processes under its own supervisor: ``python -m kanthorq
run benchmarks.systems.x2_app:app --workers 2 --dsn DSN`` (``kanthorq/supervisor.py``).
W2 only; the report gives ``kanthorq-x2 / kanthorq`` within each round.

The app the children import (``x2_app.py``) subscribes exactly as the single ``kanthorq``
worker process of W2 does: the same consumer, subject, concurrency and no-op handler.

The clock. The single process's W2 clock starts at its ``READY``, when the events are
published and committed already. Here that would put the start of two Python processes
(about 0.5 s, while a drain of 20,000 tasks takes under 2 s here) inside the clock, and the
supervisor has no ``READY`` to tell when both children are up. So the events are hidden
until both are: they are published in ONE open transaction (``publish_many(conn=)``, in
batches of ``batch``, as W2 publishes), the supervisor is started, the parent waits until
both children are listening (two connections of the database whose last statement is a
``LISTEN``, or the ``UNLISTEN`` that ends the listener's probe: one child can be past its
``LISTEN`` before the other gets there) and a short settle, then commits; the NOTIFY of
the publish goes out at that commit and wakes both. The clock starts when the COMMIT is
sent (its duration, ``commit_ms``, is in the result: a few ms, inside the clock).

It is fair: each clock starts at the later of "the events are committed and visible" and
"the worker is ready", and stops when the database shows every task completed (the same
poll). Two small differences remain, both stated: the single worker's clock includes
``app.run()``'s own start (registering its consumer, connecting its listener), which the
children have done before the commit; and here the events share one transaction
instead of one per batch.

Worker CPU % and peak RSS are summed over the supervisor and its children (psutil
``children(recursive=True)``): the CPU % of two processes can exceed 100. SIGTERM to the
supervisor stops it (it passes the signal on, and waits for the children); any process of
the tree still alive after that is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import time
from typing import Any, ClassVar

import asyncpg

import kanthorq
from benchmarks.config import Config
from benchmarks.drain import Counter, watch
from benchmarks.payload import SUBJECT
from benchmarks.procs import READY_TIMEOUT, SupervisedProcess
from benchmarks.systems.base import Body, WorkerOptions
from benchmarks.systems.kanthorq_sys import Kanthorq

logger = logging.getLogger("benchmarks")
APP = "benchmarks.systems.x2_app:app"
ENV = "KANTHORQ_BENCH_X2"  # the options of the app's module, as JSON
WORKERS = 2
SETTLE = 0.3  # seconds the children idle, listening, before the commit
LISTENING = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND query ~* '^\\s*(UN)?LISTEN\\s'
"""


def to_env(opts: WorkerOptions) -> dict[str, str]:
    """The environment entry that hands ``opts`` to the supervisor and its children."""
    return {ENV: json.dumps(dataclasses.asdict(opts))}


def from_env() -> WorkerOptions:
    """In the app's module (x2_app.py): the options the parent gave."""
    raw = os.environ.get(ENV)
    if not raw:
        raise RuntimeError(f"${ENV} is not set: x2_app is run by the kanthorq-x2 system")
    return WorkerOptions(**json.loads(raw))


async def wait_listening(conn: asyncpg.Connection, tree: SupervisedProcess, count: int) -> None:
    """Until ``count`` listener connections are in the database (each child has one)."""
    deadline = time.perf_counter() + READY_TIMEOUT
    while await conn.fetchval(LISTENING) < count:
        assert tree.proc is not None
        if tree.proc.returncode is not None:
            raise RuntimeError(f"kanthorq run --workers exited with {tree.proc.returncode}")
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{count} workers were not listening after {READY_TIMEOUT:.0f}s")
        await asyncio.sleep(0.02)


class KanthorqX2(Kanthorq):
    name: ClassVar[str] = "kanthorq-x2"
    workloads: ClassVar[frozenset[str]] = frozenset({"W2"})

    async def drain(
        self,
        dsn: str,
        items: list[list[Body]],
        count: Counter,
        target: int,
        cfg: Config,
        consumers: int = 1,
    ) -> dict[str, Any]:
        """Publish ``items`` in one transaction, start the workers, commit once they all
        listen, and time from the commit until ``target`` tasks are done."""
        opts = WorkerOptions(dsn, "drain", cfg.concurrency, consumers)
        tree = SupervisedProcess(APP, opts, WORKERS, to_env(opts))
        app = kanthorq.App(dsn)
        pub = await asyncpg.connect(dsn)
        poll = await asyncpg.connect(dsn)
        tx = pub.transaction()
        committed = False
        try:
            await app.open()
            await tx.start()
            for batch in items:
                await app.publish_many([(SUBJECT, body) for body in batch], conn=pub)
            await tree.start()
            await wait_listening(poll, tree, WORKERS)
            await asyncio.sleep(SETTLE)
            tree.mark_ready()  # the clock starts: right before the COMMIT is sent
            await tx.commit()
            committed = True
            commit_ms = 1000 * (time.perf_counter() - tree.ready_at)
            seconds = await watch(tree, poll, count, target, cfg)
            cpu = tree.cpu_since_ready()
            children = tree.children_alive()
        finally:
            if not committed and not pub.is_closed():
                with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError):
                    await tx.rollback()
            await tree.stop()
            for line in tree.take_log():  # a warning or an error of the workers, if any
                logger.warning("kanthorq-x2: %s", line)
            await pub.close()
            await poll.close()
            await app.close()
        return {
            "tasks": target,
            "seconds": seconds,
            "tasks_per_s": target / seconds,
            "worker_cpu_pct": 100 * cpu / seconds,  # summed: can exceed 100
            "workers": children,
            "commit_ms": commit_ms,
            **tree.memory(),
        }

    async def serve(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("kanthorq-x2 runs under kanthorq run --workers, not here")


SYSTEM = KanthorqX2()
