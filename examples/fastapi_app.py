"""A FastAPI service that publishes an event in the same transaction as its own write.

``POST /orders/{order_id}/cancel`` inserts a row into ``order_cancellations`` and publishes
``order.cancelled`` on the same connection, inside one transaction: both commit, or
neither does. A note larger than kanthorq's ``max_body_size`` makes the publish fail after
the insert: the endpoint answers 413 and the insert is rolled back with the transaction.
Cancelling an order twice answers 409.

Run it with ``uvicorn examples.fastapi_app:api`` (``pip install uvicorn``), and the workers
with ``kanthorq run examples.quickstart:app``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pydantic
from fastapi import FastAPI, HTTPException

import kanthorq

MAX_BODY_SIZE = 16 * 1024

SCHEMA = """
CREATE TABLE IF NOT EXISTS order_cancellations (
    order_id     BIGINT      PRIMARY KEY,
    reason       TEXT        NOT NULL,
    cancelled_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


class CancelRequest(pydantic.BaseModel):
    reason: str
    note: str = ""


class Cancelled(pydantic.BaseModel):
    order_id: int
    event_id: str


def create_app(dsn: str | None = None) -> FastAPI:
    """The service on ``dsn`` (else ``$KANTHORQ_DSN``, else the embedded server)."""
    queue = kanthorq.App(dsn, max_body_size=MAX_BODY_SIZE)

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        async with queue:  # opens the pool (and migrates); runs no workers
            await queue.pool.execute(SCHEMA)
            yield

    api = FastAPI(title="orders", lifespan=lifespan)
    api.state.queue = queue

    @api.post("/orders/{order_id}/cancel", status_code=201)
    async def cancel_order(order_id: int, request: CancelRequest) -> Cancelled:
        async with queue.pool.acquire() as conn:
            try:
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO order_cancellations (order_id, reason) VALUES ($1, $2)",
                        order_id,
                        request.reason,
                    )
                    event_id = await queue.publish(
                        "order.cancelled",
                        {"order_id": order_id, "reason": request.reason, "note": request.note},
                        conn=conn,
                    )
            except asyncpg.UniqueViolationError:
                raise HTTPException(409, f"order {order_id} is already cancelled") from None
            except kanthorq.PayloadTooLarge as exc:  # the insert above is rolled back too
                raise HTTPException(413, str(exc)) from None
        return Cancelled(order_id=order_id, event_id=event_id)

    return api


api = create_app()
