"""OpenTelemetry traces, with the SDK and its in-memory exporter: the publish span's context
travels in the event's metadata to the handler's span, in one process and across two (a
``kanthorq run`` worker); an event without a traceparent gets a root span; the outcome is
the span's status."""

from __future__ import annotations

import asyncio
import json
import signal
import textwrap
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import kanthorq
import kanthorq.tracing
from kanthorq.ids import new_id
from tests.conftest import Running, stream_table, wait_until
from tests.test_cli import spawn

Starter = Callable[..., Awaitable[Running]]
AppFactory = Callable[..., kanthorq.App]


@pytest.fixture
def exporter() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield provider, memory
    provider.shutdown()


def named(memory: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in memory.get_finished_spans() if s.name == name]


def parent_of(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def ids(span: ReadableSpan) -> tuple[int, int]:
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


async def test_the_handler_span_is_a_child_of_the_publish_span(
    make_app: AppFactory,
    start_app: Starter,
    db: asyncpg.Connection,
    exporter: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, memory = exporter
    tracer = provider.get_tracer("test")
    app = make_app()
    tracing = kanthorq.tracing.instrument(app, tracer_provider=provider)
    assert kanthorq.tracing.instrument(app) is tracing  # added once

    @app.subscribe("order.*", consumer="email")
    async def handle(msg: kanthorq.Message) -> None:
        with tracer.start_as_current_span("send email"):
            pass

    await start_app(app)
    with tracer.start_as_current_span("checkout"):
        event_id = await app.publish("order.created", b"{}", metadata={"source": "test"})
    await wait_until(lambda: named(memory, "process default"), timeout=20)
    await wait_until(lambda: named(memory, "send email"), timeout=20)

    [checkout] = named(memory, "checkout")
    [publish] = named(memory, "publish default")
    [process] = named(memory, "process default")
    [inner] = named(memory, "send email")
    assert publish.kind is SpanKind.PRODUCER
    assert process.kind is SpanKind.CONSUMER
    assert parent_of(publish) == ids(checkout)[1]
    assert parent_of(process) == ids(publish)[1]
    assert parent_of(inner) == ids(process)[1]
    assert len({ids(s)[0] for s in (checkout, publish, process, inner)}) == 1
    assert dict(publish.attributes or {}) == {
        "messaging.system": "kanthorq",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": "default",
        "messaging.message.id": event_id,
    }
    attributes = dict(process.attributes or {})
    assert attributes["messaging.system"] == "kanthorq"
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.destination.name"] == "default"
    assert attributes["messaging.consumer.group.name"] == "email"
    assert attributes["messaging.message.id"] == event_id
    assert attributes["kanthorq.attempt"] == 1
    assert attributes["kanthorq.outcome"] == "completed"
    assert process.status.status_code is StatusCode.OK

    # the context travelled in the event's metadata, next to the caller's own
    table = await stream_table(db)
    metadata = json.loads(
        await db.fetchval(f"SELECT metadata::TEXT FROM {table} WHERE id = $1", event_id)
    )
    trace_id, span_id = ids(publish)
    assert metadata.keys() == {"source", "traceparent"}
    assert metadata["traceparent"].startswith(f"00-{trace_id:032x}-{span_id:016x}-")


async def test_each_attempt_is_a_span_with_its_outcome_as_status(
    make_app: AppFactory,
    start_app: Starter,
    exporter: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, memory = exporter
    app = make_app()
    kanthorq.tracing.instrument(app, tracer_provider=provider)

    @app.subscribe("order.*", consumer="email", max_retries=1, backoff=kanthorq.Fixed(delay=0))
    async def handle(msg: kanthorq.Message) -> None:
        raise ValueError(f"attempt {msg.task.attempt_count} failed")

    await start_app(app)
    await app.publish_many([("order.created", b"{}")] * 2)
    await wait_until(lambda: len(named(memory, "process default")) == 4, timeout=20)

    [publish] = named(memory, "publish default")
    assert dict(publish.attributes or {})["messaging.batch.message_count"] == 2
    spans = sorted(named(memory, "process default"), key=lambda s: s.start_time or 0)
    for span in spans:
        assert parent_of(span) == ids(publish)[1]
        assert span.status.status_code is StatusCode.ERROR
        assert [e.name for e in span.events] == ["exception"]
    outcomes = sorted(
        (dict(s.attributes or {})["kanthorq.attempt"], dict(s.attributes or {})["kanthorq.outcome"])
        for s in spans
    )
    assert outcomes == [(1, "retried"), (1, "retried"), (2, "discarded"), (2, "discarded")]
    assert {s.status.description for s in spans} == {
        "retried: ValueError: attempt 1 failed",
        "discarded: ValueError: attempt 2 failed",
    }


@pytest.mark.parametrize(
    "metadata",
    [
        "{}",
        '{"traceparent": 42}',  # another client's odd value
        '{"traceparent": "not a traceparent", "tracestate": ["x"]}',
    ],
)
async def test_an_event_written_without_a_traceparent_gets_a_root_span(
    metadata: str,
    make_app: AppFactory,
    start_app: Starter,
    db: asyncpg.Connection,
    exporter: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, memory = exporter
    app = make_app()
    kanthorq.tracing.instrument(app, tracer_provider=provider)

    @app.subscribe("order.*", consumer="email")
    async def handle(msg: kanthorq.Message) -> None:
        return None

    async with app:
        await app.publish("order.warmup")  # creates the stream (untraced: no hook yet ran)
        memory.clear()
        # as psql or KanthorQ for Go would write it
        event_id = new_id("event")
        await db.execute(
            f"INSERT INTO {await stream_table(db)} (id, subject, body, metadata) "
            "VALUES ($1, 'order.created', '', $2::JSONB)",
            event_id,
            metadata,
        )
        # the worker runs inside a span of its own: the handler's span must not join it
        with provider.get_tracer("test").start_as_current_span("worker process"):
            await start_app(app)

        def processed() -> list[ReadableSpan]:
            return [
                s
                for s in named(memory, "process default")
                if dict(s.attributes or {})["messaging.message.id"] == event_id
            ]

        [span] = await wait_until(processed, timeout=20)
    assert span.parent is None
    assert span.status.status_code is StatusCode.OK


SPAN_APP = """
import json

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

import kanthorq
import kanthorq.tracing


def line(span):
    parent = span.parent.span_id if span.parent else None
    return json.dumps({{
        "name": span.name,
        "trace_id": span.context.trace_id,
        "span_id": span.context.span_id,
        "parent_id": parent,
        "attributes": dict(span.attributes),
    }}) + "\\n"


provider = TracerProvider()
exporter = ConsoleSpanExporter(out=open({spans!r}, "a"), formatter=line)
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

app = kanthorq.App(poll_interval=0.2)
kanthorq.tracing.instrument(app)
tracer = trace.get_tracer("worker app")


@app.subscribe("order.*", consumer="email")
async def handle(msg: kanthorq.Message) -> None:
    with tracer.start_as_current_span("send email"):
        pass
"""


def read_spans(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    spans = [json.loads(line) for line in path.read_text().splitlines() if line]
    return {span["name"]: span for span in spans}


async def test_one_trace_across_two_processes(
    dsn: str, tmp_path: Path, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, memory = exporter
    spans_file = tmp_path / "spans.jsonl"
    (tmp_path / "span_app.py").write_text(textwrap.dedent(SPAN_APP.format(spans=str(spans_file))))
    publisher = kanthorq.App(dsn)
    kanthorq.tracing.instrument(publisher, tracer_provider=provider)
    async with (
        spawn("run", "span_app:app", "--dsn", dsn, cwd=tmp_path) as proc,
        publisher,
    ):
        with provider.get_tracer("test").start_as_current_span("checkout"):
            event_id = await publisher.publish("order.created", b"{}")
        worker = await wait_until(
            lambda: "send email" in read_spans(spans_file) and read_spans(spans_file),
            timeout=30,
        )
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()

    [publish] = named(memory, "publish default")
    trace_id, span_id = ids(publish)
    process = worker["process default"]
    assert process["attributes"]["messaging.message.id"] == event_id
    assert process["trace_id"] == trace_id  # one trace across the two processes
    assert process["parent_id"] == span_id
    assert worker["send email"]["trace_id"] == trace_id
    assert worker["send email"]["parent_id"] == process["span_id"]
    assert trace.get_tracer_provider() is not provider  # the test set no global provider
