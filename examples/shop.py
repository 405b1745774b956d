"""An order service on SQLAlchemy 2 and Pydantic (``pip install 'kanthorq[sqlalchemy,pydantic]'``).

- ``Shop.place_order`` inserts the order with a SQLAlchemy ``AsyncSession`` and publishes
  ``order.placed`` (a Pydantic model) in the same transaction: both commit, or neither.
- The ``invoice`` consumer writes the invoice and completes its task in one transaction
  (``msg.ack(conn=session)``): a crash between the two can neither lose the invoice nor
  write it twice.
- The ``receipt`` consumer takes the body as an ``OrderPlaced`` (validated by Pydantic); a
  body that does not validate is discarded at once, without using up its retries.
- The ``review`` consumer parks big orders for a person (``msg.cancel()``).

``examples/test_shop.py`` tests it with :mod:`kanthorq.testing`. Run the workers with
``kanthorq run examples.shop:app``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pydantic
from sqlalchemy import ForeignKey
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import kanthorq

Mailer = Callable[[str, str], Awaitable[None]]
REVIEW_ABOVE = 100_000  # cents


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "shop_orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str]
    amount_cents: Mapped[int]


class Invoice(Base):
    __tablename__ = "shop_invoices"
    order_id: Mapped[int] = mapped_column(ForeignKey("shop_orders.id"), primary_key=True)
    amount_cents: Mapped[int]


class OrderPlaced(pydantic.BaseModel):
    order_id: int
    email: str = pydantic.Field(pattern=r"^[^@\s]+@[^@\s]+$")
    amount_cents: int = pydantic.Field(gt=0)


def sqlalchemy_url(dsn: str) -> str:
    """The same database for SQLAlchemy, on the asyncpg driver."""
    return "postgresql+asyncpg://" + dsn.split("://", 1)[1]


async def print_mail(to: str, text: str) -> None:
    print(f"mail to {to}: {text}")


class Shop:
    """The service on ``dsn`` (else ``$KANTHORQ_DSN``, else the embedded server)."""

    def __init__(self, dsn: str | None = None, *, mailer: Mailer = print_mail) -> None:
        self.app = kanthorq.App(dsn)
        self.mailer = mailer
        self._engine: AsyncEngine | None = None
        self._ready = asyncio.Lock()
        for consumer in (self.invoice, self.receipt, self.review):
            self.app.subscribe("order.placed", max_retries=5)(consumer)

    async def sessions(self) -> async_sessionmaker[AsyncSession]:
        """SQLAlchemy sessions on the app's database (open the app first), tables created."""
        async with self._ready:  # concurrent handlers make one engine
            if self._engine is None:
                assert self.app.dsn is not None, "open the app first (async with shop:)"
                engine = create_async_engine(sqlalchemy_url(self.app.dsn))
                async with engine.begin() as conn:
                    await conn.run_sync(Base.metadata.create_all)
                self._engine = engine
        return async_sessionmaker(self._engine, expire_on_commit=False)

    async def __aenter__(self) -> Shop:
        await self.app.open()
        await self.sessions()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
        await self.app.close()

    async def place_order(self, order_id: int, email: str, amount_cents: int) -> str:
        """Record the order and publish ``order.placed``, in one transaction."""
        body = OrderPlaced(order_id=order_id, email=email, amount_cents=amount_cents)
        async with (await self.sessions())() as session, session.begin():
            session.add(Order(id=order_id, email=email, amount_cents=amount_cents))
            return await self.app.publish("order.placed", body, conn=session)

    async def invoice(self, msg: kanthorq.Message) -> None:
        """Write the invoice and complete the task in one transaction."""
        order = msg.decode(OrderPlaced)
        async with (await self.sessions())() as session, session.begin():
            if await session.get(Invoice, order.order_id) is None:
                session.add(Invoice(order_id=order.order_id, amount_cents=order.amount_cents))
            await msg.ack(conn=session)

    async def receipt(self, order: OrderPlaced) -> None:
        """Send the receipt: the body arrives validated, as an OrderPlaced."""
        await self.mailer(order.email, f"order {order.order_id}: {order.amount_cents / 100:.2f}")

    async def review(self, msg: kanthorq.Message) -> None:
        """Orders from REVIEW_ABOVE cents wait for a person: their task is cancelled, and
        ``kanthorq tasks resume --consumer review EVENT_ID`` runs it again once approved.
        A slow check asks for more time first."""
        order = msg.decode(OrderPlaced)
        if order.amount_cents < REVIEW_ABOVE:
            return  # approved: completed when the handler returns
        if msg.task.attempts_used == 1:
            await msg.extend(600)  # the fraud check below may take minutes
        await msg.cancel()


shop = Shop()
app = shop.app  # kanthorq run examples.shop:app
