"""The sizes and switches of one benchmark run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8")


@dataclass
class Config:
    server_dsn: str = ""
    rounds: int = 3
    only: tuple[str, ...] = WORKLOADS
    systems: tuple[str, ...] = ("kanthorq", "pgqueuer", "procrastinate", "raw")
    events: int = 20_000  # W1, W2, W4
    batch: int = 500  # W1's batch, and how W2, W4 and W6 publish
    concurrency: int = 20
    latency_count: int = 200  # W3
    latency_gap: float = 0.02
    fanout_consumers: int = 4  # W4
    publishers: int = 16  # W5, and W8's single events
    publish_seconds: float = 10.0
    backlog: int = 1_000_000  # W6
    backlog_slice: int = 20_000  # the tasks of W6 whose draining is timed
    backlog_rounds: int = 1  # W6 runs in the first rounds only: seeding it is slow
    idle_seconds: float = 30.0  # W7's measurement
    poll: float = 0.02  # how often the parent asks the database whether all is done
    drain_timeout: float = 900.0
    out: Path = Path("benchmarks/results/latest.json")
    markdown: Path | None = None
    quick: bool = False
    meta: dict[str, object] = field(default_factory=dict)

    def make_quick(self) -> None:
        """Small sizes for a smoke test: the same code paths, in seconds."""
        self.quick = True
        self.events = 2_000
        self.batch = 100
        self.latency_count = 30
        self.publish_seconds = 2.0
        self.backlog = 20_000
        self.backlog_slice = 2_000
        self.idle_seconds = 5.0
