"""Where the database is, and connections to it.

The DSN comes from the caller, else ``KANTHORQ_DSN``, else the embedded server. It is
checked before any connection is tried, and a failed connection names the host. The
listener may LISTEN elsewhere (``listen_dsn``, else ``KANTHORQ_LISTEN_DSN``): a direct
connection when the DSN goes through a transaction pooler, which does not deliver
notifications. ``KANTHORQ_STATEMENT_CACHE_SIZE`` (0 behind such a pooler) is the
prepared statement cache of every connection when the caller does not give one.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from kanthorq.errors import ConfigError, ConnectionFailed
from kanthorq.publish_errors import note_connect_failure

ENV_DSN = "KANTHORQ_DSN"
ENV_LISTEN_DSN = "KANTHORQ_LISTEN_DSN"
ENV_STATEMENT_CACHE_SIZE = "KANTHORQ_STATEMENT_CACHE_SIZE"
DEFAULT_STATEMENT_CACHE_SIZE = 100
# a connection of ours or of the caller: plain, or borrowed from an asyncpg pool
Conn = asyncpg.Connection | PoolConnectionProxy
_SCHEMES = ("postgres", "postgresql")


@dataclass(frozen=True, slots=True)
class Target:
    """A checked DSN and the parts of it an error message names (never the password)."""

    dsn: str
    host: str
    port: int
    database: str

    def describe(self) -> str:
        plain = self.host.startswith("/") or not self.port  # a socket folder, or several hosts
        where = self.host if plain else f"{self.host}:{self.port}"
        return f"{where}/{self.database}"


def parse_dsn(dsn: object) -> Target:
    """Check that ``dsn`` is a PostgreSQL URI and return its parts."""
    if not isinstance(dsn, str) or not dsn.strip():
        raise ConfigError(f"DSN must be a non-empty str, got {dsn!r}")
    try:
        parts = urlsplit(dsn)
        hosts = parts.netloc.rpartition("@")[2]
        # several hosts (h1:5432,h2:5433), which asyncpg tries in turn, have no single port
        port = 0 if "," in hosts else parts.port or 5432
    except ValueError as exc:
        raise ConfigError(f"DSN is not a valid URI: {exc}") from None
    if parts.scheme not in _SCHEMES:
        raise ConfigError(
            "DSN must start with postgresql:// or postgres://, got "
            + (f"{parts.scheme}://" if parts.scheme else "no scheme")  # never the password
        )
    query = parse_qs(parts.query)
    host = hosts if port == 0 else parts.hostname or (query.get("host") or ["localhost"])[0]
    database = parts.path.lstrip("/") or (query.get("dbname") or [parts.username or ""])[0]
    return Target(dsn=dsn, host=host, port=port, database=database or "postgres")


def resolve_dsn(dsn: str | None) -> str | None:
    """The DSN to use: the argument, else ``$KANTHORQ_DSN``; None means the embedded server."""
    if dsn is not None:
        return dsn
    return os.environ.get(ENV_DSN) or None


def listen_target(dsn: str | None) -> Target | None:
    """Where the listener connects, checked: ``dsn``, else ``$KANTHORQ_LISTEN_DSN``; None
    means the main DSN."""
    if dsn is None:
        dsn = os.environ.get(ENV_LISTEN_DSN) or None
    if dsn is None:
        return None
    try:
        return parse_dsn(dsn)
    except ConfigError as exc:
        raise ConfigError(f"listen_dsn (or ${ENV_LISTEN_DSN}): {exc}") from None


def resolve_statement_cache_size(value: object) -> int:
    """The prepared statement cache per connection: ``value``, else
    ``$KANTHORQ_STATEMENT_CACHE_SIZE``, else 100; checked."""
    name = "statement_cache_size"
    if value is None:
        text = os.environ.get(ENV_STATEMENT_CACHE_SIZE, "").strip()
        if not text:
            return DEFAULT_STATEMENT_CACHE_SIZE
        name = f"${ENV_STATEMENT_CACHE_SIZE}"
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"{name} must be an int >= 0, got {text!r}") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be an int >= 0, got {value!r}")
    return value


def quote_literal(text: str) -> str:
    """``text`` as a SQL string literal (standard_conforming_strings is on since 9.1)."""
    return "'" + text.replace("'", "''") + "'"


def notify_sql(channel: str) -> str:
    """One simple-query string that sends a notification on ``channel`` in a transaction of
    its own, without waiting for the WAL flush: one round trip, and it works through a
    transaction pooler (a startup parameter would be refused there, and a session setting
    would leak to other clients). A wake-up is a hint: one lost in a crash only costs the
    poll's latency."""
    return (
        "BEGIN; SET LOCAL synchronous_commit TO off; "
        f"SELECT pg_notify({quote_literal(channel)}, ''); COMMIT"
    )


# What a statement raises when the server or the connection fails. asyncpg raises
# InternalClientError ("cannot switch to state ...") on a pooled connection whose backend was
# just terminated: the FATAL message has arrived, the end of the stream not yet.
DB_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)

_CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    socket.gaierror,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


def _failed(target: Target, exc: BaseException) -> ConnectionFailed:
    reason = str(exc) or type(exc).__name__
    return ConnectionFailed(f"could not connect to PostgreSQL at {target.describe()}: {reason}")


async def connect(target: Target, *, timeout: float = 10.0, **kwargs: Any) -> asyncpg.Connection:
    """One connection, outside any pool (the listener, migrations, the CLI)."""
    try:
        return await asyncpg.connect(target.dsn, timeout=timeout, **kwargs)
    except _CONNECT_ERRORS as exc:
        raise _failed(target, exc) from exc


# Set while kanthorq's own statements hold a pooled connection. asyncpg resets every
# connection returned to a pool with one more statement (UNLISTEN *, RESET ALL, advisory
# unlock, CLOSE ALL): a second round trip for each of our one-statement uses, which change
# no session state. Connections that callers borrow (app.pool.acquire()) are still reset.
_OWN_STATEMENT: ContextVar[bool] = ContextVar("kanthorq_own_statement", default=False)


@contextmanager
def own_statement() -> Iterator[None]:
    """Mark the pooled uses inside as kanthorq's own: released without the session reset."""
    token = _OWN_STATEMENT.set(True)
    try:
        yield
    finally:
        _OWN_STATEMENT.reset(token)


async def _reset_borrowed(conn: asyncpg.Connection) -> None:
    # asyncpg has rolled back any open transaction before calling this
    if not _OWN_STATEMENT.get():
        query = conn.get_reset_query()
        if query:
            await conn.execute(query)


async def _reset_nothing(conn: asyncpg.Connection) -> None:
    """For a pool only kanthorq uses: nothing changes session state, nothing to reset."""


async def _pool_connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
    """How the pools open a connection: asyncpg's own, noting a failure for the publish
    that may be waiting for it (a failure to connect surely wrote nothing)."""
    try:
        return await asyncpg.connect(*args, **kwargs)
    except BaseException as exc:
        note_connect_failure(exc)
        raise


async def create_pool(
    target: Target,
    *,
    min_size: int,
    max_size: int,
    statement_cache_size: int,
    timeout: float = 10.0,
    command_timeout: float | None = None,
    private: bool = False,
) -> asyncpg.Pool:
    """``command_timeout``: seconds any statement may take (None: no limit). ``private``: only
    kanthorq's statements use the pool, so released connections need no session reset;
    otherwise only the uses marked with :func:`own_statement` skip it."""
    try:
        pool = await asyncpg.create_pool(
            target.dsn,
            min_size=min_size,
            max_size=max_size,
            statement_cache_size=statement_cache_size,
            timeout=timeout,
            command_timeout=command_timeout,
            reset=_reset_nothing if private else _reset_borrowed,
            connect=_pool_connect,
        )
    except _CONNECT_ERRORS as exc:
        raise _failed(target, exc) from exc
    assert pool is not None
    return pool
