"""Periodic events: a schedule publishes an ordinary event at each of its ticks.

A schedule is a 5-field cron expression in a time zone (parsed by ``cronsim``, the extra
``kanthorq[cron]``; its daylight-saving rules are cron's: a daily job runs once when the
clocks go back, and at the first valid minute when they go forward), or a plain interval
(``every=``: ticks at whole multiples of it since the epoch). Every ``kanthorq run``
process with the schedule publishes its ticks; each tick is published once in all:

- a process publishes a tick only by moving the schedule's ``last_tick`` forward
  (``kanthorq_schedule``), in the transaction that writes the tick's event, so a second
  process waits for the first's commit and then finds the tick taken; and
- the event has the deduplication key ``kanthorq.periodic:<name>:<tick ms>``, unique in
  its stream.

So ticks survive processes that start, stop and crash. After downtime, only the most recent
missed tick is published, unless ``catch_up`` (then every missed tick, up to a bound).
Times are the database's (:class:`kanthorq.clock.DbClock`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kanthorq.database import DB_ERRORS
from kanthorq.errors import ConfigError, KanthorQError
from kanthorq.ids import validate_name
from kanthorq.sqlfiles import load
from kanthorq.subjects import validate_subject

if TYPE_CHECKING:
    from kanthorq.app import App
    from kanthorq.clock import DbClock
    from kanthorq.store import Registry

logger = logging.getLogger(__name__)

CATCH_UP_BOUND = 1000  # the most missed ticks catch_up=True publishes
TICK_KEY = "kanthorq.tick"  # the tick's time (ms), in the event's metadata
_RETRY = 1.0  # seconds before a tick that failed (the database) is tried again
_ERRORS: tuple[type[BaseException], ...] = (*DB_ERRORS, KanthorQError)


def _zone(tz: str | tzinfo) -> tzinfo:
    if isinstance(tz, tzinfo):
        return tz
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"unknown time zone {tz!r}: {exc}") from None


def _cronsim() -> Any:
    try:
        import cronsim
    except ImportError:
        raise ConfigError(
            "cron schedules need the cron extra: pip install 'kanthorq[cron]' "
            "(a plain interval, every=timedelta(...), does not)"
        ) from None
    return cronsim


@dataclass(frozen=True, slots=True)
class Schedule:
    name: str
    stream: str
    subject: str
    body: Any
    metadata: dict[str, Any]
    cron: str | None
    every_ms: int | None
    zone: tzinfo
    catch_up: int  # missed ticks published after downtime: 1 (the latest), or up to this

    @property
    def spec(self) -> str:
        """The schedule as ``kanthorq show`` shows it."""
        if self.cron is not None:
            return f"{self.cron} ({self.zone})"
        return f"every {timedelta(milliseconds=self.every_ms or 0)}"

    def ticks_after(self, ms: int) -> Iterator[int]:
        """The ticks after ``ms``, in order, for ever."""
        if self.every_ms is not None:
            tick = (ms // self.every_ms + 1) * self.every_ms
            while True:
                yield tick
                tick += self.every_ms
        start = datetime.fromtimestamp(ms / 1000, self.zone)
        for moment in _cronsim().CronSim(self.cron, start):
            tick = math.floor(moment.timestamp() * 1000)
            if tick > ms:
                yield tick

    def next_after(self, ms: int) -> int:
        return next(self.ticks_after(ms))

    def missed(self, last: int, now: int) -> list[int]:
        """The ticks after ``last`` up to ``now`` that are due: the latest only, or with
        ``catch_up`` the latest ``catch_up`` of them, oldest first."""
        if self.every_ms is not None:  # by arithmetic: a long downtime holds many ticks
            first = (last // self.every_ms + 1) * self.every_ms
            latest = now // self.every_ms * self.every_ms
            start = max(first, latest - (self.catch_up - 1) * self.every_ms)
            return list(range(start, latest + 1, self.every_ms))
        due: list[int] = []
        for tick in self.ticks_after(last):
            if tick > now:
                break
            due.append(tick)
            if len(due) > self.catch_up:
                due.pop(0)
        return due


def make_schedule(
    cron: str | None,
    subject: str,
    *,
    every: timedelta | None,
    body: Any,
    metadata: dict[str, Any] | None,
    stream: str,
    name: str | None,
    tz: str | tzinfo,
    catch_up: bool | int,
) -> Schedule:
    """A checked schedule: every bad part is a clear error before any SQL."""
    if (cron is None) == (every is None):
        raise ConfigError("periodic() needs a cron expression or every=timedelta(...), one of them")
    subject = validate_subject(subject)
    every_ms = None
    if every is not None:
        if not isinstance(every, timedelta) or every < timedelta(milliseconds=1):
            raise ConfigError(f"every must be a timedelta of 1 ms or more, got {every!r}")
        every_ms = round(every.total_seconds() * 1000)
    zone = _zone(tz)
    if cron is not None:
        if not isinstance(cron, str):
            raise ConfigError(f"the cron expression must be a str, got {cron!r}")
        cronsim = _cronsim()
        try:
            cronsim.CronSim(cron, datetime.now(UTC))
        except (ValueError, KeyError, cronsim.CronSimError) as exc:
            raise ConfigError(f"not a cron expression: {cron!r} ({exc})") from None
    if isinstance(catch_up, bool):
        bound = CATCH_UP_BOUND if catch_up else 1
    elif isinstance(catch_up, int) and catch_up >= 1:
        bound = catch_up
    else:
        raise ConfigError(
            f"catch_up must be True, False or a number of ticks >= 1, got {catch_up!r}"
        )
    if metadata is not None and not isinstance(metadata, dict):
        raise ConfigError(f"metadata must be a dict, got {type(metadata).__name__}")
    default = "periodic_" + (re.sub(r"[^A-Za-z0-9]+", "_", subject).strip("_") or "events")
    return Schedule(
        name=validate_name(default[:63].rstrip("_") if name is None else name, "schedule"),
        stream=validate_name(stream, "stream"),
        subject=subject,
        body=body,
        metadata=dict(metadata or {}),
        cron=cron,
        every_ms=every_ms,
        zone=zone,
        catch_up=bound,
    )


def tick_key(name: str, tick: int) -> str:
    return f"kanthorq.periodic:{name}:{tick}"


class PeriodicRunner:
    """Publishes the ticks of an app's schedules while its workers run."""

    def __init__(
        self, app: App, registry: Registry, clock: DbClock, schedules: list[Schedule]
    ) -> None:
        self._app = app
        self._registry = registry
        self._clock = clock
        self._schedules = schedules
        self.published = 0  # ticks this process published

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as group:
            for schedule in self._schedules:
                group.create_task(self._run(schedule, stop))

    async def _run(self, schedule: Schedule, stop: asyncio.Event) -> None:
        registered = False
        while not stop.is_set():
            try:
                if not registered:
                    await self._register(schedule)
                    registered = True
                wait = await self._step(schedule)
            except _ERRORS as exc:
                logger.warning(
                    "schedule %s: %s: %s; trying again in %.0fs",
                    schedule.name,
                    type(exc).__name__,
                    exc,
                    _RETRY,
                    extra={"schedule": schedule.name},
                )
                wait = _RETRY
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(wait, 0.0))

    async def _register(self, schedule: Schedule) -> None:
        """The schedule's row, and its stream ready for the ticks' keys (which a stream
        that another client created may lack until then)."""
        await self._registry.prepared_stream(schedule.stream)
        await self._app.pool.execute(
            load("schedule_register"),
            schedule.name,
            schedule.stream,
            schedule.subject,
            schedule.spec,
            schedule.next_after(self._clock.now_ms()),
        )

    async def _step(self, schedule: Schedule) -> float:
        """Publish what is due; seconds until the next tick."""
        row = await self._app.pool.fetchrow(load("schedule_get"), schedule.name)
        assert row is not None
        due = schedule.missed(row["last_tick"], row["now"])
        if due:
            await self._publish(schedule, due)
        now = self._clock.now_ms()
        return (schedule.next_after(max(now, due[-1] if due else 0)) - now) / 1000

    async def _publish(self, schedule: Schedule, ticks: list[int]) -> None:
        following = schedule.next_after(ticks[-1])
        async with self._app.pool.acquire() as conn, conn.transaction():
            taken = await conn.fetchval(load("schedule_tick"), schedule.name, ticks[-1], following)
            if taken is None:
                return  # another process published them
            await self._app.publish_many(
                [
                    (schedule.subject, schedule.body, {**schedule.metadata, TICK_KEY: tick})
                    for tick in ticks
                ],
                stream=schedule.stream,
                conn=conn,
                keys=[tick_key(schedule.name, tick) for tick in ticks],
            )
        self.published += len(ticks)
        logger.debug(
            "schedule %s: published %d tick(s), the last at %s",
            schedule.name,
            len(ticks),
            datetime.fromtimestamp(ticks[-1] / 1000, UTC).isoformat(),
            extra={"schedule": schedule.name},
        )
