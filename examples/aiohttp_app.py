"""An aiohttp service that publishes an event in the same transaction as its own write.

The same service as ``fastapi_app.py``: ``POST /orders/{order_id}/cancel`` with a JSON body
``{"reason": ..., "note": ...}`` inserts a row and publishes ``order.cancelled`` in one
transaction (201); a note too large for the event answers 413 and leaves no row; cancelling
an order twice answers 409. The kanthorq app is opened and closed by a ``cleanup_ctx``.

Run it with ``python examples/aiohttp_app.py``, and the workers with
``kanthorq run examples.quickstart:app``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

import kanthorq

MAX_BODY_SIZE = 16 * 1024

SCHEMA = """
CREATE TABLE IF NOT EXISTS order_cancellations (
    order_id     BIGINT      PRIMARY KEY,
    reason       TEXT        NOT NULL,
    cancelled_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""

QUEUE = web.AppKey("queue", kanthorq.App)


async def open_queue(web_app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: open the pool (and migrate) at startup, close it at cleanup."""
    queue = web_app[QUEUE]
    async with queue:
        await queue.pool.execute(SCHEMA)
        yield


def _bad_request(text: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=text)


async def _read(request: web.Request) -> tuple[int, str, str]:
    try:
        order_id = int(request.match_info["order_id"])
        data = await request.json()
    except ValueError:
        raise _bad_request("order_id must be an int and the body a JSON object") from None
    if not isinstance(data, dict) or not isinstance(data.get("reason"), str):
        raise _bad_request('the body must be a JSON object with a "reason" string')
    note = data.get("note", "")
    if not isinstance(note, str):
        raise _bad_request('"note" must be a string')
    return order_id, data["reason"], note


async def cancel_order(request: web.Request) -> web.Response:
    order_id, reason, note = await _read(request)
    queue = request.app[QUEUE]
    async with queue.pool.acquire() as conn:
        try:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO order_cancellations (order_id, reason) VALUES ($1, $2)",
                    order_id,
                    reason,
                )
                event_id = await queue.publish(
                    "order.cancelled",
                    {"order_id": order_id, "reason": reason, "note": note},
                    conn=conn,
                )
        except asyncpg.UniqueViolationError:
            raise web.HTTPConflict(text=f"order {order_id} is already cancelled") from None
        except kanthorq.PayloadTooLarge as exc:  # the insert above is rolled back too
            raise web.HTTPRequestEntityTooLarge(MAX_BODY_SIZE, text=str(exc)) from None
    return web.json_response({"order_id": order_id, "event_id": event_id}, status=201)


def create_app(dsn: str | None = None) -> web.Application:
    """The service on ``dsn`` (else ``$KANTHORQ_DSN``, else the embedded server)."""
    web_app = web.Application()
    web_app[QUEUE] = kanthorq.App(dsn, max_body_size=MAX_BODY_SIZE)
    web_app.cleanup_ctx.append(open_queue)
    web_app.router.add_post("/orders/{order_id}/cancel", cancel_order)
    return web_app


if __name__ == "__main__":
    web.run_app(create_app())
