"""Tests of examples/shop.py's handlers, written with kanthorq.testing.

- Unit tests call a handler directly: ``kanthorq.testing.message()`` builds the Message, with
  no database, and records what the handler did with it (ack, nack, cancel, extend).
- End-to-end tests get a fresh, migrated database from the ``kanthorq_dsn`` fixture, publish
  as the service does, and ``drain()`` the app's workers: it returns once nothing is left to
  run now, with what became of each consumer's tasks.

The fixture comes from kanthorq's pytest plugin, which is off until a project turns it on:
``kanthorq_testing = true`` in its pytest settings, or for one run::

    pytest -o kanthorq_testing=true examples/test_shop.py

It uses ``$KANTHORQ_TEST_DSN`` (a server where the tests may create databases), else the
embedded server (``pip install 'kanthorq[embedded]'``).
"""

from __future__ import annotations

import asyncpg
import pytest

from examples.shop import REVIEW_ABOVE, OrderPlaced, Shop
from kanthorq.testing import drain, message

pytestmark = pytest.mark.asyncio


class Outbox:
    """A mailer that keeps the mails."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    async def __call__(self, to: str, text: str) -> None:
        self.sent.append((to, text))


# ---- unit tests: no database --------------------------------------------------------------


async def test_receipt_mails_the_customer() -> None:
    outbox = Outbox()
    shop = Shop("postgresql://localhost/unused", mailer=outbox)  # nothing connects
    await shop.receipt(OrderPlaced(order_id=1, email="ann@example.com", amount_cents=1250))
    assert outbox.sent == [("ann@example.com", "order 1: 12.50")]


async def test_review_approves_small_orders_and_parks_big_ones() -> None:
    shop = Shop("postgresql://localhost/unused")
    small = message("order.placed", OrderPlaced(order_id=1, email="a@b.c", amount_cents=500))
    await shop.review(small)
    assert small.calls == []  # it returned: the worker completes the task

    big = message("order.placed", OrderPlaced(order_id=2, email="a@b.c", amount_cents=REVIEW_ABOVE))
    await shop.review(big)
    assert big.extended == [600]
    assert big.cancelled
    assert [call.name for call in big.calls] == ["extend", "cancel"]


# ---- end to end: a database of the test's own ---------------------------------------------


async def test_an_order_is_invoiced_and_receipted(kanthorq_dsn: str) -> None:
    outbox = Outbox()
    async with Shop(kanthorq_dsn, mailer=outbox) as shop:
        event_id = await shop.place_order(7, "ann@example.com", 2500)
        report = await drain(shop.app, timeout=30)

        assert report["invoice"].completed == [event_id]
        assert report["receipt"].completed == [event_id]
        assert report["review"].completed == [event_id]
        assert outbox.sent == [("ann@example.com", "order 7: 25.00")]
        conn = await asyncpg.connect(kanthorq_dsn)
        try:
            assert await conn.fetchval("SELECT amount_cents FROM shop_invoices") == 2500
        finally:
            await conn.close()


async def test_a_body_that_does_not_validate_is_discarded_at_once(kanthorq_dsn: str) -> None:
    async with Shop(kanthorq_dsn, mailer=Outbox()) as shop:
        bad = await shop.app.publish(
            "order.placed", {"order_id": 8, "email": "nobody", "amount_cents": 0}
        )
        report = await drain(shop.app, timeout=30)

    for consumer in ("invoice", "receipt", "review"):
        assert report[consumer].discarded == [bad]
        [error] = report[consumer].errors  # one attempt, though max_retries=5
        assert error.error.startswith("UndecodableBody: the body does not decode into")
