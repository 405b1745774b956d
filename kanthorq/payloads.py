"""Check and encode event bodies and metadata before any SQL runs."""

from __future__ import annotations

import math
from typing import Any, cast

import msgspec

from kanthorq import bodies
from kanthorq.errors import InvalidPayload, PayloadTooLarge

MAX_METADATA_DEPTH = 32
# Metadata keys that start with "kanthorq." are kanthorq's. These are the ones an event may
# carry: when its tasks become runnable (delay=/at=, or another client scheduling it), and
# a periodic event's tick. Others are refused: kanthorq.attempt_base, say, is the task
# metadata a resume writes, and an event that carried it would shrink its tasks' retries.
RESERVED_PREFIX = "kanthorq."
EVENT_KEYS = frozenset({"kanthorq.schedule_at", "kanthorq.tick"})
_encoder = msgspec.json.Encoder()


def encode_body(body: object, max_size: int) -> bytes:
    """``bytes`` are kept as they are; anything else is encoded to JSON with msgspec, or a
    Pydantic model with its own serializer (:mod:`kanthorq.bodies`)."""
    kind = type(body)
    if kind is bytes:
        data = cast(bytes, body)
    elif kind in bodies.PLAIN:  # the common bodies (dict, list, ...): straight to msgspec
        try:
            data = bodies.encode_plain(body)
        except (TypeError, ValueError, msgspec.EncodeError, RecursionError) as exc:
            raise _unencodable(kind, exc) from None
    elif isinstance(body, (bytes, bytearray, memoryview)):
        data = bytes(body)
    else:
        try:
            data = bodies.encode(body)
        except (TypeError, ValueError, msgspec.EncodeError, RecursionError) as exc:
            raise _unencodable(kind, exc) from None
    if len(data) > max_size:
        raise PayloadTooLarge(f"body is {len(data)} bytes, more than the maximum of {max_size}")
    return data


def _unencodable(kind: type, exc: BaseException) -> InvalidPayload:
    return InvalidPayload(f"body of type {kind.__name__} cannot be encoded to JSON: {exc}")


def _check_str(value: str, where: str) -> None:
    if "\x00" in value:
        raise InvalidPayload(f"metadata {where} contains a NUL character (\\u0000)")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise InvalidPayload(f"metadata {where} contains a lone surrogate")


def _check_value(value: Any, where: str, depth: int) -> None:
    if depth > MAX_METADATA_DEPTH:
        raise InvalidPayload(f"metadata is nested deeper than {MAX_METADATA_DEPTH} levels")
    if isinstance(value, str):
        _check_str(value, where)
    elif isinstance(value, float) and not math.isfinite(value):
        raise InvalidPayload(f"metadata {where} is {value!r}, which JSON cannot hold")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidPayload(f"metadata key {key!r} at {where} is not a str")
            _check_str(key, f"key {key!r}")
            _check_value(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_value(item, f"{where}[{index}]", depth + 1)
    elif value is not None and not isinstance(value, bool | int | float):
        raise InvalidPayload(
            f"metadata {where} is a {type(value).__name__}; use JSON values "
            "(str, int, float, bool, None, list, dict)"
        )


def encode_metadata(metadata: object) -> str:
    """Metadata must be a JSON object that PostgreSQL's jsonb can hold."""
    if metadata is None:
        return "{}"
    if not isinstance(metadata, dict):
        raise InvalidPayload(
            f"metadata must be a dict (a JSON object), got {type(metadata).__name__}"
        )
    if not metadata:
        return "{}"
    for key in metadata:
        if isinstance(key, str) and key.startswith(RESERVED_PREFIX) and key not in EVENT_KEYS:
            raise InvalidPayload(
                f"metadata key {key!r} is reserved: keys starting with {RESERVED_PREFIX!r} "
                f"are kanthorq's (an event may carry {', '.join(sorted(EVENT_KEYS))})"
            )
    _check_value(metadata, "$", 0)
    return _encoder.encode(metadata).decode()
