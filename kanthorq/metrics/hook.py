"""The metrics hook: counts what the hooks report into :class:`Instruments`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from kanthorq.hooks import Hook, Settlement
from kanthorq.message import Message
from kanthorq.metrics.gauges import ConsumerGauges
from kanthorq.metrics.instruments import instruments
from kanthorq.subscription import Subscription

if TYPE_CHECKING:
    from kanthorq.app import App


class Metrics(Hook):
    """Prometheus metrics of an app; :func:`kanthorq.metrics.enable` adds it."""

    def __init__(
        self,
        app: App | None = None,
        *,
        registry: CollectorRegistry,
        refresh_interval: float = 15.0,
    ) -> None:
        self.registry = registry
        self._made = instruments(registry)
        self.gauges = None if app is None else ConsumerGauges(app, self._made, refresh_interval)

    def published(self, stream: str, event_ids: Sequence[str]) -> None:
        published = self._made.published
        published[stream] = published.get(stream, 0) + len(event_ids)

    def stepped(self, consumer: Subscription) -> None:
        self._made.consumer(consumer.name)  # its series exist from the start, at 0
        if self.gauges is not None:
            self.gauges.due(consumer)

    polled = stepped  # an idle worker does not step: the poll asks for it

    def started(self, consumer: Subscription, msg: Message) -> None:
        figures = self._made.consumer(consumer.name)
        figures.running += 1
        created = msg.event.created_at
        if created:  # 0: the event was deleted, and its time is unknown
            figures.wait.observe(max(msg.task.attempted_at - created, 0) / 1000)

    def finished(
        self, consumer: Subscription, msg: Message, seconds: float, error: BaseException | None
    ) -> None:
        figures = self._made.consumer(consumer.name)
        figures.running -= 1
        figures.handler.observe(seconds)

    def settled(
        self,
        consumer: Subscription,
        msg: Message,
        outcome: Settlement,
        error: BaseException | None,
    ) -> None:
        self._made.consumer(consumer.name).outcomes[outcome] += 1

    def rescued(self, consumer: Subscription, retried: int, discarded: int) -> None:
        outcomes = self._made.consumer(consumer.name).outcomes
        outcomes["rescued"] += retried
        outcomes["discarded"] += discarded

    def handed_back(self, consumer: Subscription, count: int) -> None:
        self._made.consumer(consumer.name).outcomes["handed_back"] += count

    def db_error(self, operation: str, error: BaseException) -> None:
        self._made.db_errors[operation] = self._made.db_errors.get(operation, 0) + 1
