"""conn= with SQLAlchemy 2 (installed, on the asyncpg driver): publish and ack join the
transaction of an AsyncConnection or an AsyncSession, also before SQLAlchemy sent its
first statement (it begins the driver's transaction lazily)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

import kanthorq
from kanthorq.errors import ConfigError
from kanthorq.testing import drain
from tests.conftest import stream_table

AppFactory = Callable[..., kanthorq.App]


class Boom(Exception):
    pass


@pytest.fixture
async def engine(dsn: str, db: asyncpg.Connection) -> AsyncIterator[AsyncEngine]:
    await db.execute("CREATE TABLE invoices (order_id INT PRIMARY KEY)")
    engine = create_async_engine("postgresql+asyncpg://" + dsn.split("://", 1)[1])
    try:
        yield engine
    finally:
        await engine.dispose()


async def events(db: asyncpg.Connection) -> int:
    count: int = await db.fetchval(f"SELECT count(*) FROM {await stream_table(db)}")
    return count


async def test_publish_joins_an_async_connections_transaction(
    make_app: AppFactory, engine: AsyncEngine, db: asyncpg.Connection
) -> None:
    async with make_app() as app:
        await app.publish("a.b")  # the stream exists: count its events below

        # nothing ran through SQLAlchemy yet, so its BEGIN was not sent: the publish must
        # not run before (outside) it
        async def publish_then_fail() -> None:
            async with engine.begin() as conn:
                await app.publish("a.b", {"n": 1}, conn=conn)
                raise Boom

        with pytest.raises(Boom):
            await publish_then_fail()
        assert await events(db) == 1
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO invoices VALUES (1)"))
            ids = await app.publish_many([("a.b", b"2"), ("a.b", b"3")], conn=conn)
            assert len(ids) == 2
        assert await events(db) == 3
        assert await db.fetchval("SELECT count(*) FROM invoices") == 1
        # commit as you go: the publish is part of the transaction commit() ends
        async with engine.connect() as conn:
            await app.publish("a.b", conn=conn)
            await conn.rollback()
            await app.publish("a.b", conn=conn)
            await conn.commit()
        assert await events(db) == 4


async def test_publish_joins_an_async_sessions_transaction(
    make_app: AppFactory, engine: AsyncEngine, db: asyncpg.Connection
) -> None:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with make_app() as app:
        await app.publish("a.b")

        async def write_publish_then_fail() -> None:
            async with sessions() as session, session.begin():
                await session.execute(text("INSERT INTO invoices VALUES (1)"))
                await app.publish("a.b", conn=session)
                raise Boom

        with pytest.raises(Boom):
            await write_publish_then_fail()
        assert (await events(db), await db.fetchval("SELECT count(*) FROM invoices")) == (1, 0)
        async with sessions() as session, session.begin():
            await app.publish("a.b", conn=session)
            await session.execute(text("INSERT INTO invoices VALUES (1)"))
        assert (await events(db), await db.fetchval("SELECT count(*) FROM invoices")) == (2, 1)


async def test_ack_in_a_session_commits_the_write_and_the_completion_together(
    make_app: AppFactory, engine: AsyncEngine, db: asyncpg.Connection
) -> None:
    app = make_app()
    sessions = async_sessionmaker(engine)
    attempts: list[int] = []

    @app.subscribe("order.paid", consumer="invoice", backoff=kanthorq.Fixed(delay=0))
    async def invoice(msg: kanthorq.Message) -> None:
        attempts.append(msg.task.attempt_count)
        order = msg.json()["order_id"]
        async with sessions() as session, session.begin():
            await session.execute(text("INSERT INTO invoices VALUES (:o)"), {"o": order})
            assert await msg.ack(conn=session)
            if msg.task.attempt_count == 1:
                raise Boom("after the ack, before the commit: both roll back")

    async with app:
        event_id = await app.publish("order.paid", {"order_id": 42})
    report = (await drain(app, timeout=20))["invoice"]
    assert report.completed == [event_id]
    assert attempts == [1, 2]
    assert [e.error for e in report.errors] == [
        "Boom: after the ack, before the commit: both roll back"
    ]
    assert await db.fetchval("SELECT array_agg(order_id) FROM invoices") == [42]


async def test_conn_refuses_what_it_cannot_use(make_app: AppFactory) -> None:
    async with make_app() as app:
        with pytest.raises(ConfigError, match="conn= takes an asyncpg connection"):
            await app.publish("a.b", conn="postgresql://")  # type: ignore[arg-type]
        session = AsyncSession()  # bound to no engine: SQLAlchemy's own error
        with pytest.raises(Exception, match="bind"):
            await app.publish("a.b", conn=session)
        await session.close()
