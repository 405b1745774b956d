"""Quickstart: two consumers of one subject, each with its own retry policy.

``order.cancelled`` feeds two consumers, and each gets its own task per event:

- ``email`` retries up to 3 times with an exponential backoff. Sending fails once for
  orders 3 and 6 (retried, then completed) and always for order 5 (discarded after 4
  attempts).
- ``refund`` retries up to 5 times, every 0.25 s. The payment gateway is busy once for
  order 2 (retried), and order 4 was never paid, so its refund is discarded at once.

Run it as a script (``make demo`` or ``python examples/quickstart.py``): it starts the
workers, publishes six events, prints a line per attempt and exits once every task is
completed or discarded. With no ``KANTHORQ_DSN`` it uses the embedded PostgreSQL.

Or run only the workers with ``kanthorq run examples.quickstart:app`` and publish from
another terminal: ``kanthorq pub order.cancelled '{"order_id": 5}'``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec

import kanthorq

SUBJECT = "order.cancelled"
ORDERS = range(1, 7)
EMAIL_RETRIES = 3
REFUND_RETRIES = 5


class OrderCancelled(msgspec.Struct):
    order_id: int
    reason: str = "changed my mind"


class GatewayBusy(Exception):
    """A failure worth retrying."""


def email_problem(order_id: int, attempt: int) -> str | None:
    """Why sending the email fails, or None. Deterministic, so every run tells one story."""
    if order_id == 5:
        return "mailbox does not exist"
    if order_id % 3 == 0 and attempt == 1:
        return "SMTP server timed out"
    return None


@dataclass
class Tally:
    """What the handlers did: one printed line per attempt, and counts for the summary."""

    echo: Callable[[str], None] = print
    completed: Counter[str] = field(default_factory=Counter)
    retried: Counter[str] = field(default_factory=Counter)
    discarded: Counter[str] = field(default_factory=Counter)
    finalized: set[tuple[str, str]] = field(default_factory=set)  # (consumer, event id)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def line(self, consumer: str, msg: kanthorq.Message, text: str) -> None:
        try:
            what = f"order {msg.decode(OrderCancelled).order_id}"
        except msgspec.DecodeError:  # published by hand (`kanthorq pub`) with another body
            what = f"event {msg.event.id}"
        self.echo(f"{consumer:<7} {what}  attempt {msg.task.attempt_count}  {text}")

    def done(self, consumer: str, msg: kanthorq.Message, text: str) -> None:
        self.completed[consumer] += 1
        self.finalized.add((consumer, msg.event.id))
        self.changed.set()
        self.line(consumer, msg, text)

    def failed(self, consumer: str, msg: kanthorq.Message, error: str, max_retries: int) -> None:
        if msg.task.attempt_count <= max_retries:
            self.retried[consumer] += 1
            self.line(consumer, msg, f"failed: {error} -> will retry")
        else:
            self.line(consumer, msg, f"failed: {error} -> no retries left")

    def on_discard(
        self, consumer: str
    ) -> Callable[[kanthorq.Message, BaseException], Awaitable[None]]:
        async def hook(msg: kanthorq.Message, error: BaseException) -> None:
            self.discarded[consumer] += 1
            self.finalized.add((consumer, msg.event.id))
            self.changed.set()
            self.line(consumer, msg, f"DISCARDED ({error})")

        return hook

    async def wait_finalized(self, consumers: Iterable[str], event_ids: Iterable[str]) -> None:
        """Return once each consumer completed or discarded each of these events."""
        wanted = {(consumer, event_id) for consumer in consumers for event_id in event_ids}
        while not wanted <= self.finalized:
            self.changed.clear()
            await self.changed.wait()

    def summary(self, consumers: Iterable[str]) -> str:
        return "\n".join(
            f"{name:<7} {self.completed[name]} completed, {self.discarded[name]} discarded, "
            f"{self.retried[name]} retries"
            for name in consumers
        )


def create_app(
    dsn: str | None = None, *, tally: Tally | None = None, **options: Any
) -> kanthorq.App:
    """The quickstart app on ``dsn`` (else ``$KANTHORQ_DSN``, else the embedded server)."""
    app = kanthorq.App(dsn, **options)
    seen = tally or Tally()

    @app.subscribe(
        SUBJECT,
        consumer="email",
        max_retries=EMAIL_RETRIES,
        backoff=kanthorq.Exponential(base=0.1, factor=2.0, cap=2.0, jitter=0.1),
        on_discard=seen.on_discard("email"),
    )
    async def send_email(msg: kanthorq.Message) -> None:
        order = msg.decode(OrderCancelled)
        problem = email_problem(order.order_id, msg.task.attempt_count)
        if problem:
            seen.failed("email", msg, problem, EMAIL_RETRIES)
            raise ConnectionError(problem)  # retried with the backoff, then discarded
        seen.done("email", msg, "sent the cancellation email")

    @app.subscribe(
        SUBJECT,
        consumer="refund",
        max_retries=REFUND_RETRIES,
        backoff=kanthorq.Fixed(delay=0.25),
        on_discard=seen.on_discard("refund"),
    )
    async def refund(msg: kanthorq.Message) -> None:
        order = msg.decode(OrderCancelled)
        if order.order_id == 4:
            raise kanthorq.Discard(f"order {order.order_id} was never paid")  # no retries
        if order.order_id == 2 and msg.task.attempt_count == 1:
            seen.failed("refund", msg, "payment gateway busy", REFUND_RETRIES)
            raise GatewayBusy("payment gateway busy")
        seen.done("refund", msg, "refunded")

    return app


def redacted(dsn: str) -> str:
    """The DSN without its password, fit to print."""
    parts = urlsplit(dsn)
    if not parts.password:
        return dsn
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


async def demo(app: kanthorq.App, tally: Tally, orders: Iterable[int] = ORDERS) -> None:
    """Run the workers, publish one event per order, and stop once every task is final."""
    async with app:
        tally.echo(f"kanthorq: using {redacted(app.dsn or '')}")
        runner = asyncio.create_task(app.run())
        try:
            ids = await app.publish_many(
                [(SUBJECT, OrderCancelled(order_id=order)) for order in orders]
            )
            tally.echo(f"published {len(ids)} {SUBJECT} events")
            finished = asyncio.create_task(tally.wait_finalized(app.subscriptions, ids))
            await asyncio.wait({runner, finished}, return_when=asyncio.FIRST_COMPLETED)
            if not finished.done():
                finished.cancel()
                await runner  # the workers stopped early: raise why
                raise RuntimeError("the workers stopped before every task was final")
        except BaseException:
            runner.cancel()
            raise
        finally:
            await app.shutdown()
            await asyncio.gather(runner, return_exceptions=True)


def main() -> int:
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    try:
        asyncio.run(demo(app, tally))
    except kanthorq.KanthorQError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"\nevery task is final after {time.monotonic() - started:.1f}s:")
    print(tally.summary(app.subscriptions))
    return 0


tally = Tally()
app = create_app(tally=tally)

if __name__ == "__main__":
    sys.exit(main())
