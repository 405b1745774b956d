"""What runs beside an app's workers: retention and periodic events.

:class:`kanthorq.App` takes their public face from :class:`Background`: ``app.retain`` and
``app.periodic`` register them, and ``run()`` starts them next to the workers
(``_start_jobs``); each is a runner of its own module (:mod:`kanthorq.retention`,
:mod:`kanthorq.periodic`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta, tzinfo
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio.abc
import asyncpg

from kanthorq.clock import DbClock
from kanthorq.errors import ConfigError
from kanthorq.ids import validate_name
from kanthorq.periodic import PeriodicRunner, Schedule, make_schedule
from kanthorq.retention import RetentionPolicy, RetentionRunner, seconds_of
from kanthorq.store import Registry
from kanthorq.subscription import Handler

if TYPE_CHECKING:
    from kanthorq.admin import Admin
    from kanthorq.app import App

H = TypeVar("H", bound=Handler)


class Background:
    """``retain``, ``periodic``, and starting them beside the workers."""

    stream: str
    retention_interval: float
    retention: RetentionRunner | None
    periodic_runner: PeriodicRunner | None
    _retention: dict[str, RetentionPolicy]
    _schedules: dict[str, Schedule]
    _registry: Registry | None
    _clock: DbClock

    @property
    def admin(self) -> Admin:
        raise NotImplementedError

    @property
    def pool(self) -> asyncpg.Pool:
        raise NotImplementedError

    def subscribe(self, subjects: str, *, consumer: str | None, stream: str) -> Callable[[H], H]:
        raise NotImplementedError

    def periodic(
        self,
        cron: str | None = None,
        subject: str | None = None,
        *,
        every: timedelta | None = None,
        body: Any = b"",
        metadata: dict[str, Any] | None = None,
        stream: str | None = None,
        name: str | None = None,
        tz: str | tzinfo = "UTC",
        catch_up: bool | int = False,
        consumer: str | None = None,
    ) -> Callable[[H], H]:
        """Publish ``subject`` (with ``body``) at every tick of a 5-field ``cron`` expression
        in ``tz``, or ``every`` interval, while the app runs: once per tick in all,
        whatever number of processes run it (:mod:`kanthorq.periodic`). ``catch_up``: after
        downtime, every missed tick (up to a bound, or this many), not only the latest.
        Used as a decorator, it also subscribes the handler to the ticks (``consumer``:
        its consumer's name, else the handler's)."""
        if subject is None:
            raise ConfigError("periodic() needs the subject of the events it publishes")
        schedule = make_schedule(
            cron,
            subject,
            every=every,
            body=body,
            metadata=metadata,
            stream=self.stream if stream is None else stream,
            name=name,
            tz=tz,
            catch_up=catch_up,
        )
        if schedule.name in self._schedules:
            raise ConfigError(f"schedule {schedule.name!r} exists already; give it a name=")
        self._schedules[schedule.name] = schedule
        return self.subscribe(schedule.subject, consumer=consumer, stream=schedule.stream)

    def retain(
        self,
        stream: str | None = None,
        *,
        events: float | timedelta | None = None,
        tasks: float | timedelta | None = None,
        force: bool = False,
    ) -> None:
        """Keep the stream's events for ``events`` and its consumers' finalized tasks for
        ``tasks`` (a timedelta or seconds; None keeps them). The running workers apply it
        every ``retention_interval`` seconds, one worker at a time. Events that a consumer
        has not converted, or still has an open task for, are kept unless ``force``."""
        name = validate_name(self.stream if stream is None else stream, "stream")
        policy = RetentionPolicy(
            name, seconds_of(events, "events"), seconds_of(tasks, "tasks"), bool(force)
        )
        if policy.events is None and policy.tasks is None:
            raise ConfigError("retain() needs events=, tasks= or both")
        self._retention[name] = policy

    def _start_jobs(self, tg: anyio.abc.TaskGroup, stop: asyncio.Event) -> None:
        """What runs beside the workers: retention, the schedules' ticks."""
        if self._retention:
            self.retention = RetentionRunner(
                self.admin, self.pool, list(self._retention.values()), self.retention_interval
            )
            tg.start_soon(self.retention.run, stop)
        if self._schedules:
            assert self._registry is not None
            app = cast("App", self)  # a mixin of App: the runner publishes through it
            self.periodic_runner = PeriodicRunner(
                app, self._registry, self._clock, list(self._schedules.values())
            )
            tg.start_soon(self.periodic_runner.run, stop)
