"""OpenTelemetry traces: the ``otel`` extra (``pip install 'kanthorq[otel]'``).

    import kanthorq.tracing

    kanthorq.tracing.instrument(app)  # with the global TracerProvider (set up the SDK first)

Publishing: each ``publish`` and ``publish_many`` is a PRODUCER span, ``publish <stream>``,
whose context the API's propagator injects into every event's metadata (``traceparent``,
and ``tracestate`` when set). Consuming: each attempt is a CONSUMER span, ``process
<stream>``, a child of the context in the event's metadata, or a root span when there is
none (an event that KanthorQ for Go or ``psql`` wrote). It is current while the handler
runs, so the handler's own spans are its children. Attributes follow the messaging
semantic conventions (``messaging.system=kanthorq``, the stream as destination, the
consumer as consumer group, the event id as message id) with ``kanthorq.attempt`` and
``kanthorq.outcome``; the outcome is also the span's status: OK when completed or
cancelled, ERROR (with the exception) when retried, discarded or handed back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from contextvars import Token
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from typing import TYPE_CHECKING

from kanthorq.extras import needs

with needs("otel"):
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider

from kanthorq.hooks import Headers, Hook, Settlement
from kanthorq.message import Message, Outcome
from kanthorq.subscription import Subscription

if TYPE_CHECKING:
    from kanthorq.app import App

SYSTEM = "kanthorq"


def _version() -> str:
    try:
        return importlib_metadata.version("kanthorq")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


@dataclass(slots=True)
class _Attempt:
    span: Span
    token: Token[otel_context.Context]
    outcome: str | None = None


def _carrier(metadata: object) -> dict[str, str]:
    """The propagator's fields found in an event's metadata, as text (metadata that another
    client wrote may hold anything)."""
    if not isinstance(metadata, dict):
        return {}
    fields = propagate.get_global_textmap().fields
    return {k: v for k in fields if isinstance(v := metadata.get(k), str)}


def _describe(error: BaseException) -> str:
    try:
        return f"{type(error).__name__}: {error}"
    except Exception:
        return type(error).__name__


class Tracing(Hook):
    """The spans of publishing and of each attempt; :func:`instrument` adds it."""

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer("kanthorq", _version(), tracer_provider=tracer_provider)
        self._attempts: dict[tuple[str, str, int], _Attempt] = {}

    # ---- publishing -----------------------------------------------------------------

    def publishing(self, stream: str, count: int) -> contextlib.AbstractContextManager[Headers]:
        return self._publishing(stream, count)

    @contextlib.contextmanager
    def _publishing(self, stream: str, count: int) -> Iterator[Headers]:
        attributes: dict[str, str | int] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "publish",
            "messaging.destination.name": stream,
        }
        if count != 1:
            attributes["messaging.batch.message_count"] = count
        with self._tracer.start_as_current_span(
            f"publish {stream}", kind=SpanKind.PRODUCER, attributes=attributes
        ):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            yield carrier

    def published(self, stream: str, event_ids: Sequence[str]) -> None:
        if len(event_ids) == 1:  # still inside the publish span
            trace.get_current_span().set_attribute("messaging.message.id", event_ids[0])

    # ---- consuming ------------------------------------------------------------------

    @staticmethod
    def _key(consumer: Subscription, msg: Message) -> tuple[str, str, int]:
        return consumer.name, msg.task.event_id, msg.task.attempt_count

    def started(self, consumer: Subscription, msg: Message) -> None:
        # an empty context when the event carries none: a root span, never the worker's
        parent = propagate.extract(_carrier(msg.event.metadata), context=otel_context.Context())
        span = self._tracer.start_span(
            f"process {consumer.stream}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": SYSTEM,
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": consumer.stream,
                "messaging.consumer.group.name": consumer.name,
                "messaging.message.id": msg.task.event_id,
                "messaging.message.body.size": len(msg.event.body),
                "kanthorq.subject": msg.task.subject,
                "kanthorq.attempt": msg.task.attempt_count,
                "kanthorq.attempt_max": consumer.attempt_max,
            },
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        self._attempts[self._key(consumer, msg)] = _Attempt(span, token)

    def settled(
        self,
        consumer: Subscription,
        msg: Message,
        outcome: Settlement,
        error: BaseException | None,
    ) -> None:
        attempt = self._attempts.get(self._key(consumer, msg))
        if attempt is None:  # a batched completion confirmed after the span ended
            return
        attempt.outcome = outcome
        if outcome in ("retried", "discarded") and error is not None:
            attempt.span.record_exception(error)
            attempt.span.set_status(Status(StatusCode.ERROR, f"{outcome}: {_describe(error)}"))
        else:
            attempt.span.set_status(Status(StatusCode.OK))

    def finished(
        self, consumer: Subscription, msg: Message, seconds: float, error: BaseException | None
    ) -> None:
        attempt = self._attempts.pop(self._key(consumer, msg), None)
        if attempt is None:
            return
        span = attempt.span
        if attempt.outcome is None:
            if isinstance(error, asyncio.CancelledError):
                attempt.outcome = "handed_back"
                span.set_status(Status(StatusCode.ERROR, "interrupted by a worker shutdown"))
            elif error is not None:
                attempt.outcome = "failed"
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, _describe(error)))
            elif msg.settled is Outcome.ACK:
                attempt.outcome = "completed"
                span.set_status(Status(StatusCode.OK))
        if attempt.outcome is not None:
            span.set_attribute("kanthorq.outcome", attempt.outcome)
        span.end()
        otel_context.detach(attempt.token)


def instrument(app: App, *, tracer_provider: TracerProvider | None = None) -> Tracing:
    """Trace ``app``'s publishing and handlers from now on (its hook, added once).
    ``tracer_provider``: else the global one (``opentelemetry.trace.set_tracer_provider``)."""
    for hook in app.hooks:
        if isinstance(hook, Tracing):
            return hook
    tracing = Tracing(tracer_provider)
    app.hooks.add(tracing)
    return tracing


__all__ = ["Tracing", "instrument"]
