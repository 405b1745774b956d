"""The Starlette app of :func:`kanthorq.http.app`: a thin layer over ``App.publish``,
``App.publish_many``, ``admin.get_event`` and ``admin.get_task``; no SQL of its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import parse_qsl

import asyncpg
import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from kanthorq.errors import (
    ConfigError,
    ConnectionFailed,
    KanthorQError,
    NotPublished,
    PublishOutcomeUnknown,
    UnknownConsumer,
    UnknownStream,
)
from kanthorq.http import inputs
from kanthorq.http.inputs import HttpError
from kanthorq.http.openapi import document
from kanthorq.ids import validate_name
from kanthorq.tokens import Token, Tokens

if TYPE_CHECKING:
    from kanthorq.app import App

logger = logging.getLogger(__name__)

RETRY_AFTER = 2  # seconds, in the Retry-After of a 503
REOPEN_EVERY = 1.0  # seconds between attempts to open the app while the database is down
OPEN_TIMEOUT = 15.0
_encode = msgspec.json.Encoder().encode
_JSON = "application/json"
# what a database that cannot be reached raises: a 503 (other database errors are a 500)
_UNREACHABLE = (
    ConnectionFailed,
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
)


class Incoming:
    """What an endpoint reads of a request: the plain ASGI scope, its headers read once
    (lower-case names; the first of repeated ones), the query string parsed when asked."""

    __slots__ = ("_query", "_receive", "headers", "path_params", "scope")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self._receive = receive
        self.path_params: dict[str, str] = scope["path_params"]
        self.headers: dict[str, str] = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in reversed(scope["headers"])
        }
        self._query: dict[str, str] | None = None

    @property
    def query_params(self) -> dict[str, str]:
        if self._query is None:
            pairs = parse_qsl(self.scope["query_string"].decode("latin-1"), keep_blank_values=True)
            self._query = dict(reversed(pairs))
        return self._query

    async def body(self, limit: int) -> bytes:
        """The whole body; :class:`HttpError` 413 as soon as it is over ``limit`` bytes."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(size, limit, "at least ")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class Answer:
    """A JSON answer: its status, its encoded body, and its headers."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, data: Any, status: int = 200, headers: dict[str, str] | None = None):
        self.status = status
        self.body = _encode(data)
        self.headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.body)).encode()),
        ]
        for name, value in (headers or {}).items():
            self.headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))

    async def send(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


json_response = Answer


def error_response(error: HttpError) -> Answer:
    return Answer(error.body(), error.status, error.headers)


def unavailable(reason: str) -> HttpError:
    return HttpError(
        503,
        "database_unavailable",
        f"the database cannot be reached, so nothing was written: {reason}; try again later",
        headers={"Retry-After": str(RETRY_AFTER)},
    )


class Gate:
    """Opens the kanthorq app once: at startup, else at the first request that finds the
    database up. Meanwhile requests answer 503 (one attempt per ``REOPEN_EVERY``)."""

    def __init__(self, kq_app: App) -> None:
        self.kq_app = kq_app
        self.open = False
        self._lock: asyncio.Lock | None = None
        self._failed_at = -math.inf
        self._failure = ""

    async def ready(self) -> None:
        if self.open:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.open:
                return
            if time.monotonic() - self._failed_at < REOPEN_EVERY:
                raise unavailable(self._failure)
            try:
                await asyncio.wait_for(self.kq_app.open(), OPEN_TIMEOUT)
            except KanthorQError as exc:  # no connection, no schema, a bad DSN ...
                self._failed(str(exc))
            except (*_UNREACHABLE, asyncpg.PostgresError) as exc:  # ... a refused login
                self._failed(f"{type(exc).__name__}: {exc}")
            self.open = True

    def _failed(self, reason: str) -> NoReturn:
        self._failed_at, self._failure = time.monotonic(), reason
        logger.warning("the HTTP publisher cannot open the database: %s", reason)
        raise unavailable(reason)

    async def close(self) -> None:
        if self.open:
            self.open = False
            await self.kq_app.close()


class Api:
    def __init__(self, kq_app: App, tokens: Tokens, max_body_size: int, max_batch: int) -> None:
        for name, value in (("max_body_size", max_body_size), ("max_batch", max_batch)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
        self.kq_app = kq_app
        self.tokens = tokens
        self.max_body_size = max_body_size
        self.max_batch = max_batch
        self.gate = Gate(kq_app)

    # ---- what every request goes through -------------------------------------------

    def allowed(self, request: Incoming, scope: str, stream: str | None) -> Token:
        token = self.tokens.from_header(request.headers.get("authorization"))
        if token is None:
            raise HttpError(
                401,
                "unauthorized",
                "a valid bearer token is needed: Authorization: Bearer <token>",
                headers={"WWW-Authenticate": 'Bearer realm="kanthorq"'},
            )
        if not token.allows(scope, stream):
            where = "" if stream is None else f" on stream {stream!r}"
            raise HttpError(403, "forbidden", f"token {token.name!r} may not {scope}{where}")
        return token

    async def read_body(self, request: Incoming) -> bytes:
        """The request's body, refused as soon as it is over ``max_body_size``: by its
        Content-Length before any of it is read, else while it streams in."""
        limit = self.max_body_size
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise _too_large(int(length), limit)
        return await request.body(limit)

    # ---- the endpoints ---------------------------------------------------------------

    async def publish(self, request: Incoming) -> Answer:
        stream = _name(request.path_params["stream"], "stream")
        self.allowed(request, "publish", stream)
        content_type = _media_type(request)
        key_header = request.headers.get("idempotency-key")
        data = await self.read_body(request)
        max_body = self.kq_app.max_body_size
        if content_type == _JSON or content_type.endswith("+json"):
            event, delay, at = inputs.one_json(data, max_body, key_header)
        else:
            query = request.query_params
            subject = query.get("subject") or request.headers.get("kanthorq-subject")
            if subject is None:
                raise HttpError(
                    422,
                    "missing_field",
                    f"subject is missing: a body of Content-Type {content_type or '(none)'!r} "
                    "is stored as bytes, with its subject in ?subject= or the KanthorQ-Subject "
                    "header (send JSON as Content-Type: application/json)",
                    "subject",
                )
            key = query.get("key") or key_header
            delay, at = inputs.query_delay(query.get("delay")), inputs.query_at(query.get("at"))
            inputs.schedule(delay, at)
            meta = inputs.query_metadata(query.get("metadata"))
            event = inputs.check_event(subject, data, meta, key, max_body)
        await self.gate.ready()
        try:
            event_id, created = await self.kq_app.publish(
                event.subject,
                event.body,
                stream=stream,
                metadata=event.metadata,
                delay=delay,
                at=at,
                key=event.key,
                return_created=True,
            )
        except Exception as exc:
            failed = _publish_failed(exc)
            if failed is None:
                raise
            raise failed from exc
        location = f"{request.scope.get('root_path', '')}/v1/streams/{stream}/events/{event_id}"
        return json_response(
            {"id": event_id, "created": created}, 201 if created else 200, {"Location": location}
        )

    async def publish_batch(self, request: Incoming) -> Answer:
        stream = _name(request.path_params["stream"], "stream")
        self.allowed(request, "publish", stream)
        content_type = _media_type(request)
        ndjson = content_type in inputs.NDJSON_TYPES
        if not ndjson and content_type != _JSON:
            raise HttpError(
                415,
                "unsupported_media_type",
                "a batch is a JSON array (Content-Type: application/json) or NDJSON lines "
                f"(application/x-ndjson), not {content_type or '(none)'!r}",
                "Content-Type",
            )
        query = request.query_params
        delay, at = inputs.query_delay(query.get("delay")), inputs.query_at(query.get("at"))
        inputs.schedule(delay, at)
        data = await self.read_body(request)
        events = inputs.batch_items(data, ndjson, self.max_batch, self.kq_app.max_body_size)
        keys = [e.key for e in events]
        await self.gate.ready()
        try:
            made = await self.kq_app.publish_many(
                [(e.subject, e.body, e.metadata) for e in events],
                stream=stream,
                delay=delay,
                at=at,
                keys=keys if any(k is not None for k in keys) else None,
                return_created=True,
            )
        except Exception as exc:
            failed = _publish_failed(exc, batch=True)
            if failed is None:
                raise
            raise failed from exc
        created = [new for _, new in made]
        return json_response(
            {"ids": [event_id for event_id, _ in made], "created": created},
            201 if any(created) else 200,
        )

    async def get_event(self, request: Incoming) -> Answer:
        stream = _name(request.path_params["stream"], "stream")
        self.allowed(request, "read", stream)
        event_id = request.path_params["event_id"]
        await self.gate.ready()
        try:
            event = await self.kq_app.admin.get_event(stream, event_id)
        except UnknownStream as exc:
            raise HttpError(404, "unknown_stream", str(exc), "stream") from None
        except _UNREACHABLE as exc:
            raise unavailable(f"{type(exc).__name__}: {exc}") from exc
        if event is None:
            raise HttpError(
                404, "unknown_event", f"stream {stream!r} has no event {event_id!r}", "event_id"
            )
        return json_response({"stream": stream, **event.as_dict()})

    async def get_task(self, request: Incoming) -> Answer:
        consumer = _name(request.path_params["consumer"], "consumer")
        event_id = request.path_params["event_id"]
        self.allowed(request, "read", None)
        await self.gate.ready()
        admin = self.kq_app.admin
        try:
            info = await admin.consumer(consumer)
            self.allowed(request, "read", info.stream_name)
            task = await admin.get_task(consumer, event_id)
        except UnknownConsumer as exc:
            raise HttpError(404, "unknown_consumer", str(exc), "consumer") from None
        except _UNREACHABLE as exc:
            raise unavailable(f"{type(exc).__name__}: {exc}") from exc
        if task is None:
            raise HttpError(
                404,
                "unknown_task",
                f"consumer {consumer!r} has no task for event {event_id!r} (yet: an event "
                "becomes a task once the consumer converts it)",
                "event_id",
            )
        return json_response(task.as_dict())

    async def openapi(self, request: Request) -> Response:
        return Response(_encode(document(self.max_body_size, self.max_batch)), 200, None, _JSON)

    # ---- the app -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        with contextlib.suppress(HttpError):  # a database that is down: tried again later
            await self.gate.ready()
        try:
            yield
        finally:
            await self.gate.close()


class Endpoint:
    """An endpoint as a plain ASGI app (Starlette routes to it as it is): the hot path
    skips Starlette's Request and Response, about a third of the time of a publish."""

    def __init__(self, handler: Callable[[Incoming], Awaitable[Answer]]) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            answer = await self.handler(Incoming(scope, receive))
        except HttpError as error:
            answer = error_response(error)
        except ClientDisconnect:
            return
        await answer.send(send)


def _too_large(size: int, limit: int, prefix: str = "") -> HttpError:
    return HttpError(
        413,
        "body_too_large",
        f"the request body is {prefix}{size} bytes, more than the maximum of {limit}",
        "body",
    )


def _media_type(request: Incoming) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _name(name: str, what: str) -> str:
    try:
        return validate_name(name, what)
    except ValueError as exc:
        raise HttpError(422, "invalid_name", str(exc), what) from None


def _publish_failed(exc: Exception, batch: bool = False) -> HttpError | None:
    """The answer to a failed publish: 503 when surely nothing was written, a 500 that says
    so when the outcome is unknown, a 4xx for bad input; None for another error."""
    what = "the batch" if batch else "the event"
    if isinstance(exc, PublishOutcomeUnknown):
        return HttpError(
            500,
            "outcome_unknown",
            f"the database connection failed while {what} was being written, so it may have "
            f"been written ({exc}); publishing it again may make a duplicate, unless it has "
            "a key",
            extra={"may_be_written": True},
        )
    if isinstance(exc, NotPublished):
        return unavailable(str(exc))
    return inputs.library_error(exc)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    error = HttpError(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))
    return Response(_encode(error.body()), error.status, exc.headers, _JSON)


async def _internal_error(request: Request, exc: Exception) -> Response:
    """An error no endpoint expected (uvicorn logs it, with its traceback): still JSON."""
    error = HttpError(500, "internal_error", f"the server failed: {type(exc).__name__}")
    return Response(_encode(error.body()), 500, None, _JSON)


class PublishingApp(Starlette):
    """The Starlette app, with one shortcut: ``POST /v1/streams/{stream}/events`` at the top
    level (as ``kanthorq serve`` runs it) goes straight to its endpoint, past the router and
    the middleware, which took about a fifth of a single publish's CPU. Anything else, and
    everything when mounted under a prefix, takes the usual way."""

    def __init__(self, publish: Endpoint, **options: Any) -> None:
        super().__init__(**options)
        self._publish = publish

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = _single_publish(scope)
        if stream is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        scope["path_params"] = {"stream": stream}
        try:
            await self._publish(scope, receive, send)
        except Exception as exc:
            logger.exception("the HTTP publisher failed")
            error = HttpError(500, "internal_error", f"the server failed: {type(exc).__name__}")
            try:  # as the router's error handler does; when the answer had begun, it cannot
                await Response(_encode(error.body()), 500, None, _JSON)(scope, receive, send)
            except Exception:
                raise exc from None


def _single_publish(scope: Scope) -> str | None:
    """The stream of a top-level ``POST /v1/streams/{stream}/events``, else None."""
    if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
        return None
    path: str = scope["path"]
    if not path.startswith("/v1/streams/") or not path.endswith("/events"):
        return None
    stream = path[12:-7]
    return stream if stream and "/" not in stream else None


def build(kq_app: App, *, tokens: Tokens, max_body_size: int, max_batch: int) -> Starlette:
    api = Api(kq_app, tokens, max_body_size, max_batch)
    publish = Endpoint(api.publish)
    routes = [
        Route("/v1/streams/{stream}/events", publish, methods=["POST"]),
        Route("/v1/streams/{stream}/events:batch", Endpoint(api.publish_batch), methods=["POST"]),
        Route("/v1/streams/{stream}/events/{event_id}", Endpoint(api.get_event), methods=["GET"]),
        Route(
            "/v1/consumers/{consumer}/tasks/{event_id}",
            Endpoint(api.get_task),
            methods=["GET"],
        ),
        Route("/v1/openapi.json", api.openapi, methods=["GET"]),
    ]
    app = PublishingApp(
        publish,
        routes=routes,
        exception_handlers={HTTPException: _http_exception, Exception: _internal_error},
        lifespan=api.lifespan,
    )
    app.state.kanthorq = api
    return app
