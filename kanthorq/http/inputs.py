"""What the HTTP endpoints take, checked before anything is written, and the errors they
answer: every one names the field at fault (``subject``, ``items[3].key``, ``stream``).

Nothing here imports starlette: it is plain parsing with msgspec, on the library's own
checks (:func:`~kanthorq.subjects.validate_subject`, :func:`~kanthorq.dedup.check_key`,
:func:`~kanthorq.payloads.encode_metadata`), so the HTTP errors say what ``publish`` says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import msgspec

from kanthorq import dedup
from kanthorq.errors import (
    MAX_DELAY,
    ConfigError,
    InvalidName,
    InvalidPayload,
    InvalidSubject,
    PayloadTooLarge,
)
from kanthorq.payloads import encode_metadata
from kanthorq.schedule import with_schedule
from kanthorq.subjects import validate_subject

Delay = Annotated[float, msgspec.Meta(ge=0, le=MAX_DELAY)]
At = Annotated[datetime, msgspec.Meta(tz=True)]
NDJSON_TYPES = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}
)


class HttpError(Exception):
    """An answer other than success: ``status``, a stable ``code``, a message, and the
    field at fault when there is one."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {"code": self.code, "message": self.message, "field": self.field, **self.extra}
        }


class EventIn(msgspec.Struct, forbid_unknown_fields=True):
    """The JSON body of ``POST /v1/streams/{stream}/events``."""

    subject: str | None = None
    body: msgspec.Raw = msgspec.Raw(b"")  # kept as the request's JSON text, never re-encoded
    metadata: dict[str, Any] | None = None
    delay: Delay | None = None
    at: At | None = None
    key: str | None = None


class ItemIn(msgspec.Struct, forbid_unknown_fields=True):
    """One event of a batch: ``delay``/``at`` are the batch's, as query parameters."""

    subject: str | None = None
    body: msgspec.Raw = msgspec.Raw(b"")
    metadata: dict[str, Any] | None = None
    key: str | None = None


_ONE = msgspec.json.Decoder(EventIn)
_ITEM = msgspec.json.Decoder(ItemIn)
_MANY = msgspec.json.Decoder(list[ItemIn])
_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_UNKNOWN = re.compile(r"unknown field `(?P<name>[^`]*)`")


@dataclass(frozen=True, slots=True)
class Event:
    """A checked event: what ``publish`` and ``publish_many`` take."""

    subject: str
    body: bytes
    metadata: dict[str, Any] | None
    key: str | None


def _field(path: str, prefix: str) -> str | None:
    """``$.subject`` as ``subject``, ``$[3].key`` as ``items[3].key`` (with ``prefix``)."""
    path = path.lstrip(".")
    if not path:
        return prefix or None
    if path.startswith("["):
        return f"{prefix}{path}"
    return f"{prefix}.{path}" if prefix else path


def invalid_json(exc: msgspec.MsgspecError, prefix: str = "", where: str = "") -> HttpError:
    """A decoding error as a 400 (not JSON) or 422 (JSON of the wrong shape)."""
    text = str(exc)
    match = _PATH.search(text)
    path = match.group("path") if match else ""
    message = _PATH.sub("", text)
    unknown = _UNKNOWN.search(message)
    if unknown:
        path = f"{path}.{unknown.group('name')}"
        if unknown.group("name") in ("delay", "at") and prefix:
            message += "; a batch takes delay and at as query parameters, for all its events"
    name = _field(path, prefix)
    if isinstance(exc, msgspec.ValidationError):
        return HttpError(422, "invalid_field", f"{name or 'body'}{where}: {message}", name)
    return HttpError(400, "malformed_json", f"the request is not valid JSON{where}: {message}")


def check_event(
    subject: object,
    body: bytes,
    metadata: dict[str, Any] | None,
    key: str | None,
    max_body: int,
    prefix: str = "",
) -> Event:
    """The event, checked as ``publish`` checks it; an :class:`HttpError` naming the field."""
    at = f"{prefix}." if prefix else ""
    if subject is None:
        raise HttpError(422, "missing_field", f"{at}subject is missing", f"{at}subject")
    try:
        checked = validate_subject(subject)
    except InvalidSubject as exc:
        raise HttpError(422, "invalid_subject", str(exc), f"{at}subject") from None
    if len(body) > max_body:
        raise HttpError(
            413,
            "body_too_large",
            f"{at}body is {len(body)} bytes, more than the maximum of {max_body}",
            f"{at}body",
        )
    if metadata is not None:
        try:
            encode_metadata(with_schedule(metadata, None))
        except InvalidPayload as exc:
            raise HttpError(422, "invalid_metadata", str(exc), f"{at}metadata") from None
    if key is not None:
        try:
            dedup.check_key(key, f"{at}key")
        except InvalidPayload as exc:
            raise HttpError(422, "invalid_key", str(exc), f"{at}key") from None
    return Event(checked, body, metadata, key)


def one_json(data: bytes, max_body: int, key_header: str | None) -> tuple[Event, Any, Any]:
    """The event of a JSON request, and its ``delay`` and ``at``."""
    try:
        got = _ONE.decode(data)
    except msgspec.MsgspecError as exc:
        raise invalid_json(exc) from None
    key = got.key
    if key_header is not None:
        if key is not None and key != key_header:
            raise HttpError(
                422, "invalid_key", "key differs from the Idempotency-Key header", "key"
            )
        key = key_header
    schedule(got.delay, got.at)
    return check_event(got.subject, bytes(got.body), got.metadata, key, max_body), got.delay, got.at


def schedule(delay: object, at: object) -> None:
    if delay is not None and at is not None:
        raise HttpError(422, "invalid_schedule", "give delay or at, not both", "at")


def query_metadata(text: str | None) -> Any:
    """The ``metadata`` query parameter: a JSON object."""
    if text is None:
        return None
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise HttpError(
            422, "invalid_metadata", f"metadata is not JSON: {exc}", "metadata"
        ) from None
    if not isinstance(value, dict):
        raise HttpError(422, "invalid_metadata", "metadata must be a JSON object", "metadata")
    return value


def query_delay(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_DELAY:
        raise HttpError(
            422,
            "invalid_schedule",
            f"delay must be a number of seconds from 0 to {MAX_DELAY:g}, got {text!r}",
            "delay",
        )
    return value


def query_at(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise HttpError(
            422,
            "invalid_schedule",
            f"at must be an ISO 8601 time with an offset (2026-12-01T09:00:00Z), got {text!r}",
            "at",
        )
    return value


def batch_items(data: bytes, ndjson: bool, max_batch: int, max_body: int) -> list[Event]:
    """The checked events of a batch (a JSON array, or NDJSON lines), all or an error."""
    if ndjson:
        lines = [line for line in data.split(b"\n") if line.strip()]
        _check_count(len(lines), max_batch)
        got = []
        for n, line in enumerate(lines):
            try:
                got.append(_ITEM.decode(line))
            except msgspec.MsgspecError as exc:
                raise invalid_json(exc, f"items[{n}]", f" (line {n + 1} of the NDJSON)") from None
    else:
        try:
            got = _MANY.decode(data)
        except msgspec.MsgspecError as exc:
            raise invalid_json(exc, "items") from None
        _check_count(len(got), max_batch)
    return [
        check_event(
            item.subject, bytes(item.body), item.metadata, item.key, max_body, f"items[{n}]"
        )
        for n, item in enumerate(got)
    ]


def _check_count(count: int, max_batch: int) -> None:
    if not count:
        raise HttpError(422, "empty_batch", "the batch has no event", "items")
    if count > max_batch:
        raise HttpError(
            413,
            "batch_too_large",
            f"the batch has {count} events, more than the maximum of {max_batch}",
            "items",
        )


def library_error(exc: Exception) -> HttpError | None:
    """The answer to an input error that ``publish`` raised, naming its field; None for
    another error."""
    text = str(exc)
    if isinstance(exc, InvalidName):
        return HttpError(422, "invalid_name", text, text.split(" ", 1)[0])
    if isinstance(exc, InvalidSubject):
        return HttpError(422, "invalid_subject", text, "subject")
    if isinstance(exc, PayloadTooLarge):
        return HttpError(413, "body_too_large", text, "body")
    if isinstance(exc, InvalidPayload):
        name = text.split(" ", 1)[0]
        return HttpError(
            422, "invalid_payload", text, name if name in ("body", "metadata", "key") else None
        )
    if isinstance(exc, ConfigError):
        name = "at" if text.startswith("at ") else "delay"
        return HttpError(422, "invalid_schedule", text, name)
    return None
