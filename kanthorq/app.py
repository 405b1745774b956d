"""The application: subscriptions, the pool, publishing, and running the workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

import anyio
import asyncpg

from kanthorq import embedded, migrate
from kanthorq.background import Background
from kanthorq.clock import DbClock
from kanthorq.database import (
    Conn,
    Target,
    connect,
    create_pool,
    listen_target,
    parse_dsn,
    resolve_dsn,
    resolve_statement_cache_size,
)
from kanthorq.errors import ConfigError, NotOpen, SchemaNotReady
from kanthorq.hooks import Hooks
from kanthorq.ids import validate_name
from kanthorq.limits import Rate
from kanthorq.listener import Listener
from kanthorq.periodic import PeriodicRunner, Schedule
from kanthorq.policies import BackoffFn
from kanthorq.poller import Poller
from kanthorq.publisher import Notifier, Publisher, channel
from kanthorq.publishing import Publishing
from kanthorq.retention import RetentionPolicy, RetentionRunner
from kanthorq.store import Registry
from kanthorq.subscription import (
    DiscardHook,
    Handler,
    Subscription,
    check_subjects,
    make_subscription,
)
from kanthorq.worker import ConsumerWorker

if TYPE_CHECKING:
    from kanthorq.admin import Admin

logger = logging.getLogger(__name__)

H = TypeVar("H", bound=Handler)
DEFAULT_MAX_BODY = 8 * 1024 * 1024
WORKER_STATEMENT_TIMEOUT = 60.0


class App(Publishing, Background):
    """A kanthorq application.

    ``dsn``: a ``postgresql://`` URI; else ``$KANTHORQ_DSN``; else the embedded server.
    ``stream``: the stream that ``publish`` and ``subscribe`` use when not told otherwise.
    ``migrate``: apply the schema migrations when the app opens.
    ``listen_dsn``: where the workers LISTEN for wake-ups (else ``$KANTHORQ_LISTEN_DSN``,
    else ``dsn``): a direct connection when ``dsn`` goes through a transaction pooler.
    ``statement_cache_size``: else ``$KANTHORQ_STATEMENT_CACHE_SIZE``, else 100.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        stream: str = "default",
        migrate: bool = True,
        pool_size: int = 10,
        statement_cache_size: int | None = None,
        poll_interval: float = 1.0,
        shutdown_timeout: float = 30.0,
        max_body_size: int = DEFAULT_MAX_BODY,
        retention_interval: float = 600.0,
        listen_dsn: str | None = None,
    ) -> None:
        if dsn is not None:
            parse_dsn(dsn)  # a DSN from $KANTHORQ_DSN is checked when the app opens, so
        self._dsn = resolve_dsn(dsn)  # `kanthorq run --dsn` can still replace a bad one
        self.stream = validate_name(stream, "stream")
        self.migrate = migrate
        if listen_dsn is not None:
            listen_target(listen_dsn)  # one from $KANTHORQ_LISTEN_DSN is checked at open
        self.listen_dsn = listen_dsn
        self.statement_cache_size = resolve_statement_cache_size(statement_cache_size)
        for name, value, low in (
            ("pool_size", pool_size, 1),
            ("max_body_size", max_body_size, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an int >= {low}, got {value!r}")
        for name, seconds in (
            ("poll_interval", poll_interval),
            ("shutdown_timeout", shutdown_timeout),
            ("retention_interval", retention_interval),
        ):
            if (
                isinstance(seconds, bool)
                or not isinstance(seconds, int | float)
                or not 0 < seconds < math.inf
            ):
                raise ConfigError(f"{name} must be a finite number of seconds > 0, got {seconds!r}")
        self.pool_size = pool_size
        self.poll_interval = float(poll_interval)
        self.shutdown_timeout = float(shutdown_timeout)
        self.retention_interval = float(retention_interval)
        self.max_body_size = max_body_size
        self._subscriptions: dict[str, Subscription] = {}
        self._pool: asyncpg.Pool | None = None
        self._target: Target | None = None
        self._registry: Registry | None = None
        self._notifier: Notifier | None = None
        self._publisher: Publisher | None = None
        self._clock = DbClock()  # the database's time, read when the app opens
        self._opened = 0
        self._open_lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._admin: Admin | None = None
        self._retention: dict[str, RetentionPolicy] = {}
        self._schedules: dict[str, Schedule] = {}
        self._stop_requested = False  # shutdown() was called, maybe before run() started
        self._stop: asyncio.Event | None = None  # the running run()'s, in its event loop
        self.workers: dict[str, ConsumerWorker] = {}
        self.retention: RetentionRunner | None = None  # while run() applies retention
        self.periodic_runner: PeriodicRunner | None = None  # while run() publishes ticks
        self.poller: Poller | None = None  # while run() runs workers
        self.listener: Listener | None = None
        self.hooks = Hooks()  # metrics, traces, health: kanthorq.hooks

    # ---- subscriptions --------------------------------------------------------------

    def subscribe(
        self,
        subjects: str | Iterable[str],
        *,
        consumer: str | None = None,
        stream: str | None = None,
        exclude: str | Iterable[str] = (),
        max_retries: int = 3,
        backoff: BackoffFn | None = None,
        concurrency: int = 10,
        visibility_timeout: float = 300.0,
        on_discard: DiscardHook | None = None,
        max_running: int | None = None,
        rate: Rate | None = None,
    ) -> Callable[[H], H]:
        """Register an async handler for the events whose subjects match ``subjects``.
        ``max_running`` and ``rate``: limits across every worker of the consumer
        (:mod:`kanthorq.limits`), beside each process's ``concurrency``."""
        check_subjects(subjects)

        def decorator(fn: H) -> H:
            sub = make_subscription(
                fn,
                subjects=subjects,
                exclude=exclude,
                consumer=consumer,
                stream=self.stream if stream is None else stream,
                max_retries=max_retries,
                backoff=backoff,
                concurrency=concurrency,
                visibility_timeout=visibility_timeout,
                on_discard=on_discard,
                max_running=max_running,
                rate=rate,
            )
            if sub.name in self._subscriptions:
                raise ConfigError(
                    f"consumer {sub.name!r} is already subscribed; give each handler its own "
                    "consumer name with consumer=..."
                )
            self._subscriptions[sub.name] = sub
            return fn

        return decorator

    @property
    def subscriptions(self) -> dict[str, Subscription]:
        return dict(self._subscriptions)

    # ---- the pool -------------------------------------------------------------------

    @property
    def dsn(self) -> str | None:
        """The DSN in use (after ``open``, also the embedded server's)."""
        return self._dsn

    @dsn.setter
    def dsn(self, dsn: str | None) -> None:
        """Point the app at another database before it opens (``kanthorq run --dsn``)."""
        if self._pool is not None:
            raise ConfigError("cannot change the DSN of an open app")
        if dsn is not None:
            parse_dsn(dsn)
        self._dsn = resolve_dsn(dsn)

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise NotOpen()
        return self._pool

    @property
    def admin(self) -> Admin:
        """Inspection, task management, replay and retention for this app's database."""
        from kanthorq.admin import Admin  # the admin package imports this module

        if self._admin is None:
            self._admin = Admin(self)
        return self._admin

    async def open(self) -> None:
        """Open the pool (and apply migrations); nested and concurrent opens share it."""
        async with self._lock():  # two concurrent first opens must not make two pools
            self._opened += 1
            if self._pool is not None:
                return
            try:
                await self._connect()
            except BaseException:
                self._opened -= 1
                raise

    def _lock(self) -> asyncio.Lock:
        """The open lock of the running event loop (an app may be used from several)."""
        loop = asyncio.get_running_loop()
        if self._open_lock is None or self._open_lock[0] is not loop:
            self._open_lock = (loop, asyncio.Lock())
        return self._open_lock[1]

    async def _connect(self) -> None:
        if self._dsn is None:
            self._dsn = await asyncio.to_thread(embedded.start)
            logger.warning("no DSN given: using the embedded PostgreSQL at %s", self._dsn)
        self._target = parse_dsn(self._dsn)
        listen_target(self.listen_dsn)  # checked before any connection
        pool = await create_pool(
            self._target,
            min_size=1,
            max_size=self.pool_size,
            statement_cache_size=self.statement_cache_size,
        )
        try:
            async with pool.acquire() as conn:
                await self._prepare_schema(conn)
                await self._clock.sync(conn)
        except BaseException:
            pool.terminate()  # a failed open keeps no connection
            raise
        self._pool = pool
        target = self._target
        self._registry = Registry(
            pool, lambda: connect(target, statement_cache_size=self.statement_cache_size)
        )
        self._notifier = Notifier(self._target, statement_cache_size=self.statement_cache_size)
        self._notifier.warm()
        self._publisher = Publisher(
            pool, self._registry, self._notifier, self._clock, max_body_size=self.max_body_size
        )

    async def _prepare_schema(self, conn: Conn) -> None:
        if self.migrate:
            await migrate.up(conn)
            return
        pending = await migrate.pending(conn)
        if pending:
            names = ", ".join(f"{m.version:04d}_{m.name}" for m in pending)
            raise SchemaNotReady(
                f"the database lacks kanthorq's schema (migrations not applied: {names}); "
                "run `kanthorq migrate up`, or open the app with App(migrate=True)"
            )

    async def close(self) -> None:
        self._opened = max(self._opened - 1, 0)
        if self._opened or self._pool is None:
            return
        pool, self._pool = self._pool, None
        self._publisher = None  # publishing after close is NotOpen, not a closed pool
        if self._notifier is not None:
            await self._notifier.close()
        await pool.close()

    async def __aenter__(self) -> App:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _require_publisher(self) -> Publisher:
        if self._publisher is None:
            raise NotOpen()
        return self._publisher

    # ---- running --------------------------------------------------------------------

    def _selected(self, consumers: Sequence[str] | None) -> list[Subscription]:
        if not consumers:
            return list(self._subscriptions.values())
        unknown = [name for name in consumers if name not in self._subscriptions]
        if unknown:
            raise ConfigError(
                f"unknown consumer(s) {unknown!r}; this app has {sorted(self._subscriptions)!r}"
            )
        return [self._subscriptions[name] for name in consumers]

    async def run(self, consumers: Sequence[str] | None = None) -> None:
        """Run the workers until :meth:`shutdown` or cancellation, then shut down gracefully."""
        subs = self._selected(consumers)
        if not subs and not self._schedules:
            raise ConfigError(
                "this app has nothing to run; use @app.subscribe(...) or app.periodic(...)"
            )
        if self._stop is not None:
            raise ConfigError(
                "this app is running already; run it once, or give another App the other "
                "consumers (run(consumers=[...]) chooses them)"
            )
        self._stop = asyncio.Event()
        if self._stop_requested:
            self._stop.set()
        try:
            await self._run(subs, self._stop)
        finally:
            self._stop_all()
            self._stop = None
            self._stop_requested = False  # the app can run again

    async def _run(self, subs: list[Subscription], stop: asyncio.Event) -> None:
        async with self, self._worker_pool(len(subs)) as worker_pool:
            assert self._registry is not None
            assert self._target is not None
            workers = []
            for sub in subs:
                queries = await self._registry.consumer(sub.spec())
                workers.append(
                    ConsumerWorker(
                        sub,
                        queries,
                        worker_pool,
                        poll_interval=self.poll_interval,
                        shutdown_timeout=self.shutdown_timeout,
                        hooks=self.hooks,
                    )
                )
            self.workers = {w.sub.name: w for w in workers}
            wakers: dict[str, list[Callable[[], None]]] = defaultdict(list)
            for worker in workers:
                wakers[channel(worker.queries.stream_id)].append(worker.wake)
            self.listener = Listener(
                listen_target(self.listen_dsn) or self._target,
                wakers,
                check_interval=self.poll_interval * 5,
                statement_cache_size=self.statement_cache_size,
                probe=self.pool,
                poll_interval=self.poll_interval,
                hooks=self.hooks,
            )
            logger.info("running consumers %s", ", ".join(self.workers))
            self.poller = Poller(worker_pool, workers, self.poll_interval)
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self.listener.run)
                    tg.start_soon(self.poller.run, stop)
                    for worker in workers:
                        tg.start_soon(worker.run)
                    self._start_jobs(tg, stop)
                    await stop.wait()
                    self._stop_all()
            finally:
                self._stop_all()

    @contextlib.asynccontextmanager
    async def _worker_pool(self, consumers: int) -> AsyncIterator[asyncpg.Pool]:
        """The workers' own connections, apart from ``app.pool``: a handler that holds a
        connection of ``app.pool`` while it awaits ``msg.ack()`` (or nack, cancel) must not
        wait for the same pool, which other such handlers may hold to the last connection."""
        assert self._target is not None
        pool = await create_pool(
            self._target,
            min_size=1,
            max_size=min(2 * consumers + 1, self.pool_size),
            statement_cache_size=self.statement_cache_size,
            # a connection that stops answering (a black-holed network) fails the statement
            # instead of holding a worker, or its shutdown, until TCP gives up
            command_timeout=WORKER_STATEMENT_TIMEOUT,
            private=True,
        )
        try:
            yield pool
        finally:
            await pool.close()

    def _stop_all(self) -> None:
        if self.listener is not None:
            self.listener.stop()
        for worker in self.workers.values():
            worker.stop()

    async def shutdown(self) -> None:
        """Ask :meth:`run` to stop claiming, finish (or hand back) its tasks, and return.

        It returns at once; ``run()`` returns when the workers have drained. Called before
        ``run()``, it makes the next ``run()`` stop at once."""
        self._stop_requested = True
        if self._stop is not None:
            self._stop.set()
        self._stop_all()  # no claim starts after this, even one whose reply is on its way
