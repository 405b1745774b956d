"""Fresh databases for tests: a migrated template built once, copied for each test.

The server is ``$KANTHORQ_TEST_DSN`` when it is set (a PostgreSQL role that may create
databases), else the embedded server (``kanthorq[embedded]``) in a folder of the caller's.
``CREATE DATABASE ... TEMPLATE`` copies the migrated template in a few milliseconds, so
each test gets a database of its own without migrating it again.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from kanthorq import embedded, migrate
from kanthorq.sqlfiles import quote_ident

ENV_TEST_DSN = "KANTHORQ_TEST_DSN"
_counter = itertools.count()


def with_database(dsn: str, database: str) -> str:
    """The same server, another database."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


def database_of(dsn: str) -> str:
    """The database a DSN names (its path; the embedded server's DSN has its socket folder
    in the query string)."""
    return urlsplit(dsn).path.lstrip("/")


def server_dsn(data_home: Path) -> str:
    """``$KANTHORQ_TEST_DSN``, else the DSN of an embedded server keeping its data under
    ``data_home`` (started once per process, stopped when the process exits)."""
    return os.environ.get(ENV_TEST_DSN) or embedded.start(data_home)


def _name(kind: str) -> str:
    return f"kq_{kind}_{os.getpid()}_{next(_counter)}"


async def _create(server: str, name: str, template: str) -> None:
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {quote_ident(name)} TEMPLATE {quote_ident(template)}")
    finally:
        await admin.close()


async def drop_database(server: str, name: str) -> None:
    """Drop the database ``name`` of the server ``server``, closing its connections."""
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
    finally:
        await admin.close()


async def create_template(server: str) -> str:
    """Create a database with every migration applied, to copy; return its name."""
    name = _name("tpl")
    await _create(server, name, "template0")
    conn = await asyncpg.connect(with_database(server, name))
    try:
        await migrate.up(conn)
    finally:
        await conn.close()
    return name


async def copy_database(server: str, template: str) -> str:
    """A new database copied from ``template``; return its DSN."""
    name = _name("t")
    await _create(server, name, template)
    return with_database(server, name)


@asynccontextmanager
async def template_database(server: str) -> AsyncIterator[str]:
    """A migrated template database (its name), dropped afterwards."""
    name = await create_template(server)
    try:
        yield name
    finally:
        await drop_database(server, name)


@asynccontextmanager
async def fresh_database(server: str, template: str) -> AsyncIterator[str]:
    """A database of its own copied from ``template`` (its DSN), dropped afterwards."""
    dsn = await copy_database(server, template)
    try:
        yield dsn
    finally:
        await drop_database(server, database_of(dsn))


@asynccontextmanager
async def scratch_database(server: str) -> AsyncIterator[str]:
    """An empty database, without kanthorq's schema (its DSN), dropped afterwards."""
    name = _name("scratch")
    await _create(server, name, "template0")
    try:
        yield with_database(server, name)
    finally:
        await drop_database(server, name)
