"""Event bodies as JSON: encoding what is published, decoding into a handler's type.

msgspec does the work for msgspec Structs, dataclasses, attrs classes and plain values.
A Pydantic model (and an annotation that holds one, such as ``list[Order]``) uses Pydantic's
own serializer and validation: ``model_dump_json(by_alias=True)``, which is what
``model_validate_json`` reads back, and ``model_validate_json``. Pydantic is never imported
here: a body or an annotation can only be a Pydantic model once the caller imported it.

A body that fails to decode raises :class:`kanthorq.errors.UndecodableBody`: the same bytes
will never decode, so the worker discards the task at once instead of retrying it.
"""

from __future__ import annotations

import contextlib
import sys
import typing
from collections.abc import Callable
from typing import Any

import msgspec

from kanthorq.errors import ConfigError, UndecodableBody

Decoder = Callable[[bytes], Any]
_decoders: dict[Any, Decoder] = {}


def _base_model() -> Any:
    """Pydantic's ``BaseModel`` when Pydantic is imported already, else None."""
    pydantic = sys.modules.get("pydantic")
    base = getattr(pydantic, "BaseModel", None)
    return base if isinstance(base, type) else None


def _enc_hook(value: Any) -> Any:
    """Pydantic models inside other values (a list of models, a dict holding one)."""
    base = _base_model()
    if base is not None and isinstance(value, base):
        return value.model_dump(mode="json", by_alias=True)
    raise TypeError(f"objects of type {type(value).__name__} are not supported")


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)


# bodies that are never a Pydantic model themselves (one inside them meets the enc_hook):
# encode_plain(body) takes them without looking for Pydantic
PLAIN = frozenset({dict, list, str, int, float, bool, type(None)})
encode_plain = _encoder.encode


def encode(body: object) -> bytes:
    """``body`` as JSON. Raises ``TypeError``/``ValueError``/``msgspec.EncodeError`` for a
    value that JSON cannot hold."""
    if type(body) in PLAIN:
        return encode_plain(body)
    base = _base_model()
    if base is not None and isinstance(body, base):
        text: str = body.model_dump_json(by_alias=True)
        return text.encode()
    return _encoder.encode(body)


def _mentions_pydantic(annotation: Any, base: type) -> bool:
    """Whether ``annotation`` is, or holds (``list[M]``, ``M | None``), a Pydantic model."""
    if isinstance(annotation, type) and issubclass(annotation, base):
        return True
    return any(_mentions_pydantic(arg, base) for arg in typing.get_args(annotation))


def _name(annotation: Any) -> str:
    return getattr(annotation, "__qualname__", None) or repr(annotation)


def _build(annotation: Any) -> Decoder:
    base = _base_model()
    if base is not None and _mentions_pydantic(annotation, base):
        if isinstance(annotation, type) and issubclass(annotation, base):
            model: Any = annotation
            validate: Decoder = model.model_validate_json
            return validate
        adapter = sys.modules["pydantic"].TypeAdapter(annotation)
        validate_json: Decoder = adapter.validate_json
        return validate_json
    try:
        # a class msgspec does not know (no Struct, dataclass, attrs class or TypedDict)
        # would fail on every body: refuse it now
        if annotation is not object:  # object: any JSON value, as msgspec decodes it
            msgspec.json.schema(annotation)
        decoder: Decoder = msgspec.json.Decoder(annotation).decode
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"cannot decode event bodies into {_name(annotation)}: use a msgspec.Struct, a "
            "dataclass, an attrs class, a Pydantic model, a TypedDict or a JSON type such as "
            f"dict; msgspec says: {str(exc).splitlines()[-1]}"
        ) from None
    return decoder


def decoder(annotation: Any) -> Decoder:
    """The function that decodes a JSON body into ``annotation``, built once per type.
    :class:`kanthorq.errors.ConfigError` for a type that no body can decode into."""
    try:
        return _decoders[annotation]
    except (KeyError, TypeError):  # TypeError: an unhashable annotation, built every time
        pass
    built = _build(annotation)
    with contextlib.suppress(TypeError):
        _decoders[annotation] = built
    return built


def _undecodable(annotation: Any, exc: Exception) -> UndecodableBody:
    message = " ".join(str(exc).split())
    return UndecodableBody(f"the body does not decode into {_name(annotation)}: {message}")


def decode(body: bytes, annotation: Any) -> Any:
    """``body`` decoded into ``annotation``; :class:`UndecodableBody` when it does not fit."""
    decode_into = decoder(annotation)
    try:
        return decode_into(body)
    except ValueError as exc:  # msgspec's DecodeError and Pydantic's ValidationError
        raise _undecodable(annotation, exc) from exc


def decode_any(body: bytes) -> Any:
    """``body`` decoded from JSON, into Python's types."""
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise UndecodableBody(f"the body is not JSON: {exc}") from exc
