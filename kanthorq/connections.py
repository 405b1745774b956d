"""The connections that ``conn=`` takes: asyncpg's, or SQLAlchemy 2's on the asyncpg driver.

``publish(conn=...)``, ``publish_many(conn=...)`` and ``msg.ack/nack/cancel(conn=...)``
join the transaction of the connection they are given. With SQLAlchemy, that is an
``AsyncConnection`` or an ``AsyncSession`` of an engine made with ``postgresql+asyncpg://``:
kanthorq then runs its statements on the asyncpg connection underneath, inside the
transaction SQLAlchemy began. SQLAlchemy begins that transaction on the driver lazily, at
its first statement, so when nothing ran yet a ``SELECT 1`` goes through SQLAlchemy first:
our writes must not run before (and outside) its ``BEGIN``.

SQLAlchemy is never imported here: an object can only be one of its connections once the
caller imported it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from kanthorq.database import Conn
from kanthorq.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

    AnyConn: TypeAlias = Conn | AsyncConnection | AsyncSession
else:
    AnyConn: TypeAlias = Any


def _sqlalchemy_kind(conn: object) -> str | None:
    """``"connection"`` or ``"session"`` for SQLAlchemy's asyncio objects, else None."""
    module = sys.modules.get("sqlalchemy.ext.asyncio")
    if module is None:
        return None
    if isinstance(conn, module.AsyncSession):
        return "session"
    if isinstance(conn, module.AsyncConnection):
        return "connection"
    return None


async def _from_sqlalchemy(conn: AsyncConnection) -> Conn:
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    if not isinstance(driver, asyncpg.Connection):
        raise ConfigError(
            "conn= takes a SQLAlchemy connection on the asyncpg driver (an engine made with "
            f"postgresql+asyncpg://); this one's driver is {type(driver).__module__}"
        )
    if not driver.is_in_transaction():
        # SQLAlchemy sends BEGIN with its first statement: make it send it now (in
        # autocommit mode there is none, and the writes commit at once, as on asyncpg)
        await conn.exec_driver_sql("SELECT 1")
    return driver


async def driver_connection(conn: object) -> Conn:
    """The asyncpg connection to run kanthorq's statements on, for what ``conn=`` was given."""
    if isinstance(conn, asyncpg.Connection | PoolConnectionProxy):
        return conn
    kind = _sqlalchemy_kind(conn)
    given: Any = conn  # one of SQLAlchemy's asyncio objects, when kind names one
    if kind == "session":
        return await _from_sqlalchemy(await given.connection())
    if kind == "connection":
        return await _from_sqlalchemy(given)
    raise ConfigError(
        "conn= takes an asyncpg connection, or a SQLAlchemy AsyncConnection or AsyncSession "
        f"on the asyncpg driver; got {type(conn).__name__}"
    )
