"""What the runner asks of a system: install, publish, serve (in a worker process), count."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import asyncpg

Body = dict[str, Any]


class Publisher(Protocol):
    """A publishing client, opened before the clock starts."""

    def prepare(self, batch: list[Body]) -> Any:
        """Work done before the clock (the raw floor builds its rows here; others pass)."""
        ...

    async def many(self, prepared: Any) -> None:
        """Publish a batch in one call of the system's batch API."""
        ...

    async def one(self, body: Body) -> None:
        """Publish one event in a transaction of its own."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class WorkerOptions:
    dsn: str
    mode: str  # "drain": a no-op handler; "latency": the handler reports each body's age
    concurrency: int
    consumers: int
    streams: int = 1  # kanthorq: the consumers are spread over this many streams (W7)


# the worker process calls ``on_body`` with each handled body in latency mode
OnBody = Callable[[Body], None]


class System:
    """A system under test. The parent process calls everything but :meth:`serve`."""

    name: ClassVar[str] = ""
    has_worker: ClassVar[bool] = True
    workloads: ClassVar[frozenset[str]] = frozenset()

    async def install(self, dsn: str) -> None:
        """Create the system's schema with its own installer."""

    async def open_publisher(self, dsn: str, connections: int) -> Publisher:
        raise NotImplementedError

    async def completed(self, conn: asyncpg.Connection, expected: int) -> int:
        """How many of the ``expected`` published tasks the database shows completed."""
        raise NotImplementedError

    async def serve(
        self, opts: WorkerOptions, ready: Callable[[], None], stop: asyncio.Event, on_body: OnBody
    ) -> None:
        """Run the system's worker until ``stop`` is set (in the worker process)."""
        raise NotImplementedError
