"""LISTEN on the streams' channels over one dedicated connection, and keep it alive.

A lost connection is noticed (termination callback, or a failed health check every
``check_interval``), re-opened with a capped backoff, and every consumer is woken after a
reconnect so it catches up on what was published meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence

import asyncpg

from kanthorq.database import DB_ERRORS, Conn, Target, connect
from kanthorq.errors import ConnectionFailed

logger = logging.getLogger(__name__)
MAX_BACKOFF = 5.0
_ERRORS: tuple[type[BaseException], ...] = (ConnectionFailed, *DB_ERRORS)


class Listener:
    def __init__(
        self,
        target: Target,
        channels: Mapping[str, Sequence[Callable[[], None]]],
        *,
        check_interval: float = 5.0,
    ) -> None:
        self._target = target
        self._channels = channels
        self._check_interval = check_interval
        self._lost = asyncio.Event()
        self._stopping = asyncio.Event()
        self.connected = asyncio.Event()
        self.connection: asyncpg.Connection | None = None

    def stop(self) -> None:
        self._stopping.set()
        self._lost.set()

    def _wake(self, channel: str) -> None:
        for callback in self._channels.get(channel, ()):
            callback()

    def _on_notify(self, _conn: Conn, _pid: int, channel: str, _payload: object) -> None:
        self._wake(channel)

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
                backoff = min(max(backoff * 2, 0.1), MAX_BACKOFF)
                logger.warning("listener: %s; reconnecting in %.1fs", exc, backoff)
            self.connected.clear()
            if not self._stopping.is_set() and backoff:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)

    async def _session(self) -> None:
        self._lost.clear()  # before connecting: a stop() from here on is not lost
        if self._stopping.is_set():
            return
        conn = await connect(self._target)
        self.connection = conn
        conn.add_termination_listener(self._on_lost)
        try:
            for channel in self._channels:
                await conn.add_listener(channel, self._on_notify)
            self.connected.set()
            self._wake_all()  # catch up on what was published while we were not listening
            while not self._lost.is_set() and not self._stopping.is_set():
                try:
                    await asyncio.wait_for(self._lost.wait(), self._check_interval)
                except TimeoutError:
                    await conn.execute("SELECT 1", timeout=self._check_interval)
            if not self._stopping.is_set():
                logger.warning("listener: connection lost; reconnecting")
        finally:
            self.connection = None
            if not conn.is_closed():
                conn.terminate()
