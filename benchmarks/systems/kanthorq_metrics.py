"""kanthorq with its Prometheus metrics on: the W2 worker of ``kanthorq`` with
``kanthorq.metrics.enable(app)`` (every hook of the metrics, and the gauges' database read
every 15 s). Issue 11 asks W2 with metrics to stay within 5% of W2 without; the report
gives that ratio within each round."""

from __future__ import annotations

from typing import ClassVar

import kanthorq
from benchmarks.systems.kanthorq_sys import Kanthorq


class KanthorqMetrics(Kanthorq):
    name: ClassVar[str] = "kanthorq+metrics"
    workloads: ClassVar[frozenset[str]] = frozenset({"W2"})

    def configure(self, app: kanthorq.App) -> None:
        import kanthorq.metrics

        kanthorq.metrics.enable(app)


SYSTEM = KanthorqMetrics()
