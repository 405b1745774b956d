"""The metrics hook: counts what the hooks report, in prometheus-client's metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from kanthorq.hooks import Hook, Settlement
from kanthorq.message import Message
from kanthorq.metrics.gauges import ConsumerGauges
from kanthorq.metrics.instruments import OUTCOMES, Instruments, instruments
from kanthorq.subscription import Subscription

if TYPE_CHECKING:
    from prometheus_client.metrics import Counter, Gauge, Histogram

    from kanthorq.app import App


class _Consumer:
    """One consumer's series, bound once (a labels() look-up per task would cost more)."""

    __slots__ = ("handler", "outcomes", "running", "wait")

    def __init__(self, made: Instruments, name: str) -> None:
        self.running: Gauge = made.running.labels(name)
        self.handler: Histogram = made.handler_seconds.labels(name)
        self.wait: Histogram = made.wait_seconds.labels(name)
        # every outcome exists from the start, at 0, so that rate() sees the first one
        self.outcomes: dict[str, Counter] = {o: made.tasks.labels(name, o) for o in OUTCOMES}


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
        self._consumers: dict[str, _Consumer] = {}
        self.gauges = None if app is None else ConsumerGauges(app, self._made, refresh_interval)

    def _consumer(self, sub: Subscription) -> _Consumer:
        found = self._consumers.get(sub.name)
        if found is None:
            found = self._consumers[sub.name] = _Consumer(self._made, sub.name)
        return found

    def published(self, stream: str, event_ids: Sequence[str]) -> None:
        self._made.published.labels(stream).inc(len(event_ids))

    def stepped(self, consumer: Subscription) -> None:
        self._consumer(consumer)
        if self.gauges is not None:
            self.gauges.due(consumer)

    def started(self, consumer: Subscription, msg: Message) -> None:
        series = self._consumer(consumer)
        series.running.inc()
        created = msg.event.created_at
        if created:  # 0: the event was deleted, and its time is unknown
            series.wait.observe(max(msg.task.attempted_at - created, 0) / 1000)

    def finished(
        self, consumer: Subscription, msg: Message, seconds: float, error: BaseException | None
    ) -> None:
        series = self._consumer(consumer)
        series.running.dec()
        series.handler.observe(seconds)

    def settled(
        self,
        consumer: Subscription,
        msg: Message,
        outcome: Settlement,
        error: BaseException | None,
    ) -> None:
        self._consumer(consumer).outcomes[outcome].inc()

    def rescued(self, consumer: Subscription, retried: int, discarded: int) -> None:
        outcomes = self._consumer(consumer).outcomes
        outcomes["rescued"].inc(retried)
        outcomes["discarded"].inc(discarded)

    def handed_back(self, consumer: Subscription, count: int) -> None:
        self._consumer(consumer).outcomes["handed_back"].inc(count)

    def db_error(self, operation: str, error: BaseException) -> None:
        self._made.db_errors.labels(operation).inc()
