"""The metrics themselves: names, help texts, labels and buckets, made once per registry."""

from __future__ import annotations

import weakref

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# seconds: from a few milliseconds to an hour (a retried task waits its backoff)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
OUTCOMES = ("completed", "retried", "discarded", "cancelled", "rescued", "handed_back")

_MADE: weakref.WeakKeyDictionary[CollectorRegistry, Instruments] = weakref.WeakKeyDictionary()


class Instruments:
    """kanthorq's metrics in one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.published = Counter(
            "kanthorq_published_events",
            "Events published by this process, by stream.",
            ["stream"],
            registry=registry,
        )
        self.tasks = Counter(
            "kanthorq_tasks",
            "Task attempts that ended, by consumer and outcome: completed, retried, "
            "discarded, cancelled, rescued (past the visibility timeout, runs again) or "
            "handed_back (at a shutdown).",
            ["consumer", "outcome"],
            registry=registry,
        )
        self.handler_seconds = Histogram(
            "kanthorq_handler_seconds",
            "How long handlers ran, by consumer.",
            ["consumer"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.wait_seconds = Histogram(
            "kanthorq_task_wait_seconds",
            "From the event's created_at to the start of its handler, by consumer.",
            ["consumer"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.running = Gauge(
            "kanthorq_tasks_running",
            "Handlers running now in this process, by consumer.",
            ["consumer"],
            registry=registry,
        )
        self.lag = Gauge(
            "kanthorq_consumer_lag_events",
            "Events the consumer's filters select that are not tasks yet (refreshed every "
            "15 s at most).",
            ["consumer"],
            registry=registry,
        )
        self.consumer_tasks = Gauge(
            "kanthorq_consumer_tasks",
            "The consumer's tasks by state (refreshed every 15 s at most; estimated above 10,000).",
            ["consumer", "state"],
            registry=registry,
        )
        self.db_errors = Counter(
            "kanthorq_db_errors",
            "Database operations that failed (and were retried), by operation.",
            ["operation"],
            registry=registry,
        )


def instruments(registry: CollectorRegistry) -> Instruments:
    """The metrics of ``registry``, made on first use (a registry refuses a name twice)."""
    made = _MADE.get(registry)
    if made is None:
        made = _MADE[registry] = Instruments(registry)
    return made
