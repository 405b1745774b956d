"""Liveness and readiness of a running app, for ``/healthz`` and ``/readyz``.

Live: the process's event loop answers (whoever can ask gets the answer from the loop).
Ready: the database answers, every consumer's worker loop has finished a step within the
last few poll intervals, and the listener is connected. A worker stuck behind a lock (its
conversion or claim waits), a worker retrying a failing database, and a dead listener that
the poll is covering for each read as not ready, with the reason in the report.

:class:`Health` is a hook: it learns of the workers' steps and the database errors from the
events, never from the worker itself.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from kanthorq.hooks import Hook
from kanthorq.sqlfiles import load
from kanthorq.subscription import Subscription

if TYPE_CHECKING:
    from kanthorq.app import App

STALE_POLLS = 3  # poll intervals without a step before a worker is not ready
MIN_STALE = 5.0  # seconds: never less (a slow machine, a busy database)
PING_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Report:
    """What a probe found: ``ok`` when every check is."""

    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks]}

    def text(self) -> str:
        head = "ready" if self.ok else "not ready"
        lines = [f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}" for c in self.checks]
        return "\n".join([head, *lines]) + "\n"


def _ago(seconds: float) -> str:
    return f"{seconds:.1f}s"


class Health(Hook):
    """The health of ``app`` (its workers' steps and database errors come as hook events).

    ``stale``: seconds without a step before a worker is not ready (default: 3 poll
    intervals, at least 5 s)."""

    def __init__(self, app: App, *, stale: float | None = None) -> None:
        self._app = app
        self._stale = stale
        self._stepped: dict[str, float] = {}  # consumer: time.monotonic() of its last step
        self._error: tuple[float, str, str] | None = None  # when, operation, what

    # ---- hook events ----------------------------------------------------------------

    def stepped(self, consumer: Subscription) -> None:
        self._stepped[consumer.name] = time.monotonic()

    def db_error(self, operation: str, error: BaseException) -> None:
        self._error = (time.monotonic(), operation, f"{type(error).__name__}: {error}")

    # ---- probes ---------------------------------------------------------------------

    def live(self) -> Report:
        """The event loop answers: it runs this."""
        return Report([Check("loop", True, "the event loop answers")])

    async def ready(self, timeout: float = PING_TIMEOUT) -> Report:
        checks = [await self._database(timeout)]
        checks.extend(self._workers())
        checks.append(self._listener())
        return Report(checks)

    async def _database(self, timeout: float) -> Check:
        started = time.monotonic()
        try:
            await asyncio.wait_for(self._app.pool.fetchval(load("health_ping")), timeout)
        except TimeoutError:
            return Check("database", False, f"no answer within {timeout:g}s")
        except Exception as exc:
            return Check("database", False, f"{type(exc).__name__}: {exc}")
        return Check("database", True, f"answered in {(time.monotonic() - started) * 1000:.0f} ms")

    def _limit(self) -> float:
        if self._stale is not None:
            return self._stale
        return max(STALE_POLLS * self._app.poll_interval, MIN_STALE)

    def _workers(self) -> list[Check]:
        """Each worker: not stuck in a step, and the process's poll answering (an idle
        worker does not step: the poll asks for it, and wakes it when there is work)."""
        workers = self._app.workers
        if not workers:
            return [Check("workers", False, "the app's workers are not running")]
        now = time.monotonic()
        limit = self._limit()
        checks = [self._poll(now, limit)]
        for name, worker in workers.items():
            busy = worker.step_started
            if busy is None or now - busy <= limit:
                stepped = self._stepped.get(name)
                last = "not yet" if stepped is None else f"{_ago(now - stepped)} ago"
                checks.append(Check(f"consumer {name}", True, f"last step {last}"))
                continue
            detail = (
                f"its worker loop has been in one step for {_ago(now - busy)}: stuck waiting "
                "for the database, a lock, or an on_discard hook"
            )
            checks.append(Check(f"consumer {name}", False, detail + self._last_error(now)))
        return checks

    def _poll(self, now: float, limit: float) -> Check:
        poller = self._app.poller
        answered = None if poller is None else poller.answered_at
        if answered is not None and now - answered <= limit:
            return Check("poll", True, f"answered {_ago(now - answered)} ago")
        since = "not yet" if answered is None else f"not for {_ago(now - answered)}"
        detail = (
            f"the workers' poll (every {self._app.poll_interval:g}s) has answered {since}: "
            "stuck waiting for the database or a lock"
        )
        return Check("poll", False, detail + self._last_error(now))

    def _last_error(self, now: float) -> str:
        if self._error is None:
            return ""
        at, operation, what = self._error
        return f"; last database error {_ago(now - at)} ago in {operation}: {what}"

    def _listener(self) -> Check:
        listener = self._app.listener
        if listener is None:
            return Check("listener", False, "not running")
        if not listener.connected.is_set():
            return Check(
                "listener",
                False,
                "not connected (reconnecting): new events are found by the poll, every "
                f"{self._app.poll_interval:g}s, not at once",
            )
        if listener.notifications_work is False:
            return Check(
                "listener",
                True,
                "connected, but notifications do not arrive (a transaction pooler?): new "
                f"events are found by the poll, every {self._app.poll_interval:g}s; see "
                "listen_dsn",
            )
        return Check("listener", True, "connected")


def enable(app: App, *, stale: float | None = None) -> Health:
    """The health hook of ``app``, added once."""
    for hook in app.hooks:
        if isinstance(hook, Health):
            return hook
    health = Health(app, stale=stale)
    app.hooks.add(health)
    return health
