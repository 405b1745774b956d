"""Recent activity, for the dashboard: a consumer's tasks completed, retried and discarded
per minute, and a stream's events per second. Each is one bounded query: it reads at most a
fixed number of rows from an index, whatever the size of the table, and says when it
stopped there (its figures are then lower bounds)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from kanthorq.admin.base import AdminBase
from kanthorq.errors import ConfigError
from kanthorq.ids import event_id_at

KINDS = ("completed", "retried", "discarded")
READ_PER_STATE = 5_000  # tasks read per state, at most, for one consumer's activity
RATE_COUNT_UP_TO = 100_000  # events counted, at most, for one stream's rate


@dataclass(frozen=True, slots=True)
class Activity:
    """A consumer's tasks per minute over ``minutes`` minutes up to ``now`` (ms), oldest
    minute first: ``completed``, ``retried`` (failures retried) and ``discarded``.

    ``complete`` is False when a state had more recent tasks than were read: the counts are
    then lower bounds. Completed tasks are found by the schedule they ran on, back to
    ``since_schedule`` (ms): one that waited longer than that in a backlog is not counted.
    """

    consumer: str
    now: int
    minutes: int
    completed: list[int]
    retried: list[int]
    discarded: list[int]
    complete: bool
    since_schedule: int

    @property
    def failures(self) -> int:
        """Failures in the window: retried and discarded."""
        return sum(self.retried) + sum(self.discarded)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class StreamRate:
    """A stream's events over the last ``seconds``, by their ids' times, and per second.
    ``complete`` is False when the count stopped at its limit (a lower bound)."""

    stream: str
    seconds: int
    events: int
    complete: bool

    @property
    def per_second(self) -> float:
        return self.events / self.seconds

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"per_second": self.per_second}


class ActivityReader(AdminBase):
    """``activity`` and ``stream_rate``."""

    async def activity(self, consumer: str, *, minutes: int = 60) -> Activity:
        """``consumer``'s tasks completed, retried and discarded per minute over the last
        ``minutes`` (1 to 1440), read from its task table's times in one bounded query."""
        if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= 1440:
            raise ConfigError(f"minutes must be a whole number from 1 to 1440, got {minutes!r}")
        info = await self.consumer(consumer)
        now: int = await self.pool.fetchval("SELECT kanthorq_now_ms()")
        start = now - minutes * 60_000
        since_schedule = start - minutes * 60_000  # a window's time of backlog before it
        rows = await self.pool.fetch(
            info.sql("admin_activity"), start, since_schedule, READ_PER_STATE
        )
        series = {kind: [0] * minutes for kind in KINDS}
        complete = True
        for row in rows:
            if row["kind"] == "read":
                complete = complete and row["n"] < READ_PER_STATE
            elif row["kind"] in series:
                minute = min(max(int(row["minute"]), 0), minutes - 1)
                series[row["kind"]][minute] += row["n"]
        return Activity(
            consumer=info.name,
            now=now,
            minutes=minutes,
            completed=series["completed"],
            retried=series["retried"],
            discarded=series["discarded"],
            complete=complete,
            since_schedule=since_schedule,
        )

    async def stream_rate(self, stream: str, *, seconds: int = 300) -> StreamRate:
        """``stream``'s events of the last ``seconds`` (1 to 86400), counted from its
        primary key up to a limit."""
        if isinstance(seconds, bool) or not isinstance(seconds, int) or not 1 <= seconds <= 86400:
            raise ConfigError(f"seconds must be a whole number from 1 to 86400, got {seconds!r}")
        info = await self.stream(stream)
        now: int = await self.pool.fetchval("SELECT kanthorq_now_ms()")
        events: int = await self.pool.fetchval(
            info.sql("admin_stream_rate"), event_id_at(now - seconds * 1000), RATE_COUNT_UP_TO
        )
        return StreamRate(info.name, seconds, events, events < RATE_COUNT_UP_TO)
