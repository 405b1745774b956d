"""The lifecycle hooks: the events a task meets, in order; a failing hook breaks nothing;
an app without hooks does no per-task work; publishing headers join the metadata."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import asyncpg
import pytest

import kanthorq
from kanthorq.entities import TaskState
from kanthorq.hooks import Headers, Hook, Hooks, Settlement, with_headers
from kanthorq.message import Message
from kanthorq.subscription import Subscription
from tests.conftest import Running, task_states, wait_until

Starter = Callable[..., Awaitable[Running]]
AppFactory = Callable[..., kanthorq.App]


class Recorder(Hook):
    """Every event, as (name, event id or detail)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def published(self, stream: str, event_ids: Sequence[str]) -> None:
        self.events.append(("published", (stream, list(event_ids))))

    def claimed(self, consumer: Subscription, count: int) -> None:
        self.events.append(("claimed", count))

    def started(self, consumer: Subscription, msg: Message) -> None:
        self.events.append(("started", msg.task.event_id))

    def finished(
        self, consumer: Subscription, msg: Message, seconds: float, error: BaseException | None
    ) -> None:
        self.events.append(("finished", (msg.task.event_id, type(error).__name__)))

    def settled(
        self, consumer: Subscription, msg: Message, outcome: Settlement, error: BaseException | None
    ) -> None:
        self.events.append(("settled", (msg.task.event_id, outcome, type(error).__name__)))

    def rescued(self, consumer: Subscription, retried: int, discarded: int) -> None:
        self.events.append(("rescued", (retried, discarded)))

    def handed_back(self, consumer: Subscription, count: int) -> None:
        self.events.append(("handed_back", count))

    def of(self, name: str) -> list[Any]:
        return [detail for event, detail in self.events if event == name]


class Broken(Hook):
    """Raises in every event it hears."""

    def __init__(self) -> None:
        self.calls = 0

    def _fail(self) -> None:
        self.calls += 1
        raise RuntimeError("this hook is broken")

    def publishing(self, stream: str, count: int) -> contextlib.AbstractContextManager[Headers]:
        self._fail()
        raise AssertionError("unreachable")

    def published(self, stream: str, event_ids: Sequence[str]) -> None:
        self._fail()

    def stepped(self, consumer: Subscription) -> None:
        self._fail()

    def started(self, consumer: Subscription, msg: Message) -> None:
        self._fail()

    def finished(
        self, consumer: Subscription, msg: Message, seconds: float, error: BaseException | None
    ) -> None:
        self._fail()

    def settled(
        self, consumer: Subscription, msg: Message, outcome: Settlement, error: BaseException | None
    ) -> None:
        self._fail()


async def test_a_task_meets_the_events_in_order(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    app = make_app()
    recorder = app.hooks.add(Recorder())

    @app.subscribe("job.*", consumer="work", max_retries=1, backoff=kanthorq.Fixed(delay=0))
    async def work(msg: kanthorq.Message) -> None:
        if msg.event.subject == "job.fail":
            raise KeyError("missing")

    await start_app(app)
    good = await app.publish("job.ok", b"{}")
    bad = await app.publish("job.fail", b"{}")
    assert ("published", ("default", [good])) in recorder.events
    await wait_until(lambda: len(recorder.of("settled")) == 3, timeout=20)

    assert sorted(recorder.of("settled")) == sorted(
        [
            (good, "completed", "NoneType"),
            (bad, "retried", "KeyError"),
            (bad, "discarded", "KeyError"),
        ]
    )
    assert sum(recorder.of("claimed")) == 3  # two attempts of the failing task, one good
    for event_id, attempts in ((good, 1), (bad, 2)):
        names = [
            e
            for e, d in recorder.events
            if (e == "started" and d == event_id) or (e == "finished" and d[0] == event_id)
        ]
        assert names == ["started", "finished"] * attempts
    # a failure settles inside its attempt: before its finished
    order = [(e, d) for e, d in recorder.events if e in ("settled", "finished")]
    assert order.index(("settled", (bad, "retried", "KeyError"))) < order.index(
        ("finished", (bad, "NoneType"))
    )
    assert await task_states(db, "work") == {
        TaskState.COMPLETED: 1,
        TaskState.DISCARDED: 1,
    }


async def test_a_broken_hook_breaks_neither_a_worker_nor_a_publish(
    make_app: AppFactory,
    start_app: Starter,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="kanthorq.hooks")
    app = make_app()
    broken = app.hooks.add(Broken())
    recorder = app.hooks.add(Recorder())  # added after the broken one: still hears it all

    @app.subscribe("job.*", consumer="work")
    async def work(msg: kanthorq.Message) -> None:
        return None

    await start_app(app)
    ids = [await app.publish("job.ok", b"{}") for _ in range(3)]
    ids += await app.publish_many([("job.ok", b"{}")] * 3)
    await wait_until(lambda: len(recorder.of("settled")) == 6, timeout=20)
    assert {d[0] for d in recorder.of("settled")} == set(ids)
    assert await task_states(db, "work") == {TaskState.COMPLETED: 6}
    assert broken.calls > 6
    # logged once per hook and event, not once per task
    failures = [r.getMessage() for r in caplog.records if "failed in" in r.getMessage()]
    assert len(failures) == len(set(failures)) <= 6, failures


async def test_without_hooks_a_handler_runs_unwrapped() -> None:
    hooks = Hooks()

    async def work() -> None:
        return None

    coro = work()
    assert hooks.attempt(None, None, coro) is coro  # type: ignore[arg-type]
    await coro
    assert not hooks
    assert not hooks.settling
    assert not hooks.publishing_hooks

    class OnlyStepped(Hook):
        def stepped(self, consumer: Subscription) -> None:
            pass

    hooks.add(OnlyStepped())
    coro = work()
    assert hooks.attempt(None, None, coro) is coro  # type: ignore[arg-type]
    await coro
    sentinel = object()
    assert hooks.publisher(sentinel) is sentinel  # type: ignore[arg-type]


def test_only_hooks_are_accepted() -> None:
    with pytest.raises(TypeError, match=r"kanthorq\.hooks\.Hook"):
        Hooks().add(object())  # type: ignore[arg-type]


def test_headers_join_the_metadata_and_the_caller_keeps_its_keys() -> None:
    headers = {"traceparent": "00-abc-def-01"}
    assert with_headers(None, headers) == headers
    assert with_headers({"a": 1}, headers) == {"traceparent": "00-abc-def-01", "a": 1}
    mine = {"traceparent": "mine"}
    assert with_headers(mine, headers) == {"traceparent": "mine"}
    assert with_headers("not a dict", headers) == "not a dict"  # the publisher refuses it
    assert with_headers({"a": 1}, {}) == {"a": 1}


class Stamp(Hook):
    @contextlib.contextmanager
    def _stamp(self) -> Iterator[Headers]:
        yield {"stamp": "yes"}

    def publishing(self, stream: str, count: int) -> contextlib.AbstractContextManager[Headers]:
        return self._stamp()


async def test_publishing_headers_reach_every_event_of_every_shape(
    make_app: AppFactory, db: asyncpg.Connection
) -> None:
    app = make_app()
    app.hooks.add(Stamp())
    async with app:
        one = await app.publish("a.b", b"1", metadata={"k": "v"})
        many = await app.publish_many(
            iter(
                [
                    ("a.b", b"2"),
                    ("a.b", b"3", {"stamp": "caller's"}),
                    kanthorq.Event(subject="a.b", body=b"4", metadata={"x": 1}),
                ]
            )
        )
        with pytest.raises(kanthorq.errors.InvalidPayload):
            await app.publish_many([("a.b", b"5", "not a dict")])  # type: ignore[list-item]
    table = await db.fetchval("SELECT 'kanthorq_' || id FROM kanthorq_stream_registry")
    rows = await db.fetch(f'SELECT id, metadata::TEXT AS m FROM "{table}" ORDER BY id')
    import json

    found = {r["id"]: json.loads(r["m"]) for r in rows}
    assert found[one] == {"stamp": "yes", "k": "v"}
    assert found[many[0]] == {"stamp": "yes"}
    assert found[many[1]] == {"stamp": "caller's"}
    assert found[many[2]] == {"stamp": "yes", "x": 1}


async def test_handed_back_and_rescued_are_heard(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    from tests.conftest import age_running

    app = make_app(shutdown_timeout=0.2)
    recorder = app.hooks.add(Recorder())
    release = asyncio.Event()

    @app.subscribe("job.*", consumer="work", visibility_timeout=60)
    async def work(msg: kanthorq.Message) -> None:
        await release.wait()

    running = await start_app(app)
    first = await app.publish("job.slow", b"{}")
    await wait_until(lambda: recorder.of("started") == [first], timeout=20)
    await running.stop()
    assert recorder.of("handed_back") == [1]
    assert recorder.of("finished") == [(first, "CancelledError")]
    assert await task_states(db, "work") == {TaskState.RETRYABLE: 1}

    # a worker that died: its task is rescued by the next one's poll
    other = make_app()
    heard = other.hooks.add(Recorder())

    @other.subscribe("job.*", consumer="work", visibility_timeout=60)
    async def stall(msg: kanthorq.Message) -> None:
        await release.wait()

    await start_app(other)
    await wait_until(lambda: heard.of("started") == [first], timeout=20)
    await age_running(db, "work", 120_000)
    await wait_until(lambda: heard.of("rescued") == [(1, 0)], timeout=20)
    release.set()
