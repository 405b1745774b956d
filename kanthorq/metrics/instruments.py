"""The metrics themselves: names, help texts, labels and buckets, and their values.

The values are plain numbers, kept by the event loop that runs the workers (one thread),
and turned into Prometheus metric families only when a registry collects them: a task
costs a few additions, not a lock per metric. One :class:`Instruments` per registry.
"""

from __future__ import annotations

import bisect
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

# seconds: from a few milliseconds to an hour (a retried task waits its backoff)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
OUTCOMES = ("completed", "retried", "discarded", "cancelled", "rescued", "handed_back")

_MADE: weakref.WeakKeyDictionary[CollectorRegistry, Instruments] = weakref.WeakKeyDictionary()


class Histogram:
    """Counts per bucket (the last one: above every bound) and the sum."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        buckets, total = [], 0
        for bound, count in zip((*map(str, map(float, BUCKETS)), "+Inf"), self.counts, strict=True):
            total += count
            buckets.append((bound, float(total)))
        return buckets


class Consumer:
    """One consumer's figures."""

    __slots__ = ("handler", "outcomes", "running", "wait")

    def __init__(self) -> None:
        self.running = 0
        self.handler = Histogram()
        self.wait = Histogram()
        self.outcomes = dict.fromkeys(OUTCOMES, 0)


@dataclass(eq=False)  # a registry keys its collectors by identity
class Instruments(Collector):
    """kanthorq's figures in one registry (the registry collects them)."""

    consumers: dict[str, Consumer] = field(default_factory=dict)
    published: dict[str, int] = field(default_factory=dict)  # by stream
    db_errors: dict[str, int] = field(default_factory=dict)  # by operation
    lag: dict[str, int] = field(default_factory=dict)  # by consumer (from the database)
    tasks: dict[tuple[str, str], int] = field(default_factory=dict)  # (consumer, state)

    def consumer(self, name: str) -> Consumer:
        found = self.consumers.get(name)
        if found is None:
            found = self.consumers[name] = Consumer()
        return found

    def collect(self) -> Iterator[Metric]:
        yield from self._counters()
        handler = HistogramMetricFamily(
            "kanthorq_handler_seconds", "How long handlers ran, by consumer.", labels=["consumer"]
        )
        wait = HistogramMetricFamily(
            "kanthorq_task_wait_seconds",
            "From the event's created_at to the start of its handler, by consumer.",
            labels=["consumer"],
        )
        running = GaugeMetricFamily(
            "kanthorq_tasks_running",
            "Handlers running now in this process, by consumer.",
            labels=["consumer"],
        )
        for name, figures in self.consumers.items():
            handler.add_metric([name], figures.handler.cumulative(), figures.handler.sum)
            wait.add_metric([name], figures.wait.cumulative(), figures.wait.sum)
            running.add_metric([name], figures.running)
        yield from (handler, wait, running)
        yield from self._gauges()

    def _counters(self) -> Iterator[Metric]:
        published = CounterMetricFamily(
            "kanthorq_published_events",
            "Events published by this process, by stream.",
            labels=["stream"],
        )
        for stream, count in self.published.items():
            published.add_metric([stream], count)
        tasks = CounterMetricFamily(
            "kanthorq_tasks",
            "Task attempts that ended, by consumer and outcome: completed, retried, "
            "discarded, cancelled, rescued (past the visibility timeout, runs again) or "
            "handed_back (at a shutdown).",
            labels=["consumer", "outcome"],
        )
        for name, figures in self.consumers.items():
            for outcome, count in figures.outcomes.items():
                tasks.add_metric([name, outcome], count)
        errors = CounterMetricFamily(
            "kanthorq_db_errors",
            "Database operations that failed (and were retried), by operation.",
            labels=["operation"],
        )
        for operation, count in self.db_errors.items():
            errors.add_metric([operation], count)
        yield from (published, tasks, errors)

    def _gauges(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "kanthorq_consumer_lag_events",
            "Events the consumer's filters select that are not tasks yet (read from the "
            "database every 15 s at most).",
            labels=["consumer"],
        )
        for name, count in self.lag.items():
            lag.add_metric([name], count)
        tasks = GaugeMetricFamily(
            "kanthorq_consumer_tasks",
            "The consumer's tasks by state (read from the database every 15 s at most; "
            "estimated above 10,000).",
            labels=["consumer", "state"],
        )
        for (name, state), count in self.tasks.items():
            tasks.add_metric([name, state], count)
        yield from (lag, tasks)


def instruments(registry: CollectorRegistry) -> Instruments:
    """The figures of ``registry``, registered on first use (a registry refuses a name
    twice)."""
    made = _MADE.get(registry)
    if made is None:
        made = _MADE[registry] = Instruments()
        registry.register(made)
    return made
