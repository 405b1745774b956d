"""LISTEN on the streams' channels over one dedicated connection, and keep it alive.

A lost connection is noticed (termination callback, or a failed health check every
``check_interval``), re-opened with a capped backoff, and every consumer is woken after a
reconnect so it catches up on what was published meanwhile.

Whether notifications arrive at all is checked once: after its LISTEN, the listener sends
a probe notification on a channel of its own from another connection (the app's pool,
where publishers notify). A transaction pooler such as PgBouncer in transaction mode
accepts LISTEN but delivers nothing; then one WARNING names the fallback (polling) and
the fix (a direct ``listen_dsn``). The probe runs beside the workers, never before them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence

import asyncpg

from kanthorq.database import (
    DB_ERRORS,
    DEFAULT_STATEMENT_CACHE_SIZE,
    ENV_LISTEN_DSN,
    Conn,
    Target,
    connect,
    notify_sql,
    own_statement,
)
from kanthorq.errors import ConnectionFailed
from kanthorq.hooks import Hooks

logger = logging.getLogger(__name__)
MAX_BACKOFF = 5.0
PROBE_TIMEOUT = 5.0
_ERRORS: tuple[type[BaseException], ...] = (ConnectionFailed, *DB_ERRORS)


class Listener:
    def __init__(
        self,
        target: Target,
        channels: Mapping[str, Sequence[Callable[[], None]]],
        *,
        check_interval: float = 5.0,
        statement_cache_size: int = DEFAULT_STATEMENT_CACHE_SIZE,
        probe: asyncpg.Pool | None = None,
        poll_interval: float | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        """``probe``: the pool to send the probe notification from (None: no probe);
        ``poll_interval``: the workers' fallback, named in the warning."""
        self._target = target
        self._channels = channels
        self._check_interval = check_interval
        self._cache_size = statement_cache_size
        self._probe_pool = probe
        self._poll_interval = poll_interval
        self._hooks = Hooks() if hooks is None else hooks
        self._probe_channel = f"kanthorq_probe_{secrets.token_hex(8)}"
        self._probe_seen = asyncio.Event()
        self._lost = asyncio.Event()
        self._stopping = asyncio.Event()
        self._busy = asyncio.Lock()  # one statement at a time on the listening connection
        self.connected = asyncio.Event()
        self.connection: asyncpg.Connection | None = None
        # None until the probe has answered; False: wake-ups do not arrive (warned)
        self.notifications_work: bool | None = None

    def stop(self) -> None:
        self._stopping.set()
        self._lost.set()

    def _wake(self, channel: str) -> None:
        for callback in self._channels.get(channel, ()):
            callback()

    def _on_notify(self, _conn: Conn, _pid: int, channel: str, _payload: object) -> None:
        self._wake(channel)

    def _on_probe(self, _conn: Conn, _pid: int, _channel: str, _payload: object) -> None:
        self._probe_seen.set()

    def _on_lost(self, _conn: Conn) -> None:
        self._lost.set()

    def _wake_all(self) -> None:
        for channel in self._channels:
            self._wake(channel)

    async def run(self) -> None:
        backoff = 0.0
        while not self._stopping.is_set():
            try:
                await self._session()
                backoff = 0.0
            except _ERRORS as exc:
                self._hooks.db_error("listen", exc)
                backoff = min(max(backoff * 2, 0.1), MAX_BACKOFF)
                logger.warning(
                    "listener: %s: %s; reconnecting in %.1fs", type(exc).__name__, exc, backoff
                )
            self.connected.clear()
            if not self._stopping.is_set() and backoff:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)

    async def _session(self) -> None:
        self._lost.clear()  # before connecting: a stop() from here on is not lost
        if self._stopping.is_set():
            return
        conn = await connect(self._target, statement_cache_size=self._cache_size)
        self.connection = conn
        conn.add_termination_listener(self._on_lost)
        probe: asyncio.Task[None] | None = None
        try:
            for channel in self._channels:
                await conn.add_listener(channel, self._on_notify)
            if self._probe_pool is not None and self.notifications_work is None:
                await conn.add_listener(self._probe_channel, self._on_probe)
                probe = asyncio.ensure_future(self._probe(self._probe_pool, conn))
            self.connected.set()
            self._wake_all()  # catch up on what was published while we were not listening
            await self._watch(conn)
        finally:
            if probe is not None:  # a probe this session could not finish is made again
                probe.cancel()
            self.connection = None
            if not conn.is_closed():
                conn.terminate()

    async def _watch(self, conn: asyncpg.Connection) -> None:
        """Until the connection is lost or the listener stops: a health check now and then."""
        while not self._lost.is_set() and not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._lost.wait(), self._check_interval)
            except TimeoutError:
                async with self._busy:
                    await conn.execute("SELECT 1", timeout=self._check_interval)
        if not self._stopping.is_set():
            logger.warning("listener: connection lost; reconnecting")

    async def _probe(self, pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
        """Notify the probe channel from another connection, see whether it arrives, and
        stop listening on it once that is known."""
        await self._probe_once(pool)
        if self.notifications_work is not None:
            try:
                async with self._busy:
                    await conn.remove_listener(self._probe_channel, self._on_probe)
            except DB_ERRORS as exc:  # the session is ending anyway
                logger.debug("listener: UNLISTEN probe: %s: %s", type(exc).__name__, exc)

    async def _probe_once(self, pool: asyncpg.Pool) -> None:
        self._probe_seen.clear()
        try:
            with own_statement():  # changes no session state: no reset when released
                await pool.execute(notify_sql(self._probe_channel))
        except DB_ERRORS as exc:  # inconclusive: the next session probes again
            logger.debug("listener: could not send the probe: %s: %s", type(exc).__name__, exc)
            return
        try:
            await asyncio.wait_for(self._probe_seen.wait(), PROBE_TIMEOUT)
        except TimeoutError:
            if self._lost.is_set() or self._stopping.is_set():
                return  # the session ended meanwhile: inconclusive
            self.notifications_work = False
            self._warn()
            return
        self.notifications_work = True
        logger.debug("listener: notifications arrive on %s", self._target.describe())

    def _warn(self) -> None:
        every = (
            f"every {self._poll_interval:g}s (poll_interval)"
            if self._poll_interval is not None
            else "every poll_interval seconds"
        )
        logger.warning(
            "LISTEN on %s does not receive notifications (a test notification did not arrive "
            "within %gs; a transaction pooler such as PgBouncer in transaction mode accepts "
            "LISTEN but delivers nothing): workers are not woken by new events and find them "
            "by polling %s instead. To fix it, let the listener connect to PostgreSQL "
            "directly: App(listen_dsn=...), $%s, or kanthorq run --listen-dsn",
            self._target.describe(),
            PROBE_TIMEOUT,
            every,
            ENV_LISTEN_DSN,
            extra={"listen_target": self._target.describe()},
        )
