"""A subscription: a handler, the consumer that feeds it, and its retry policy.

Everything is checked here, when the decorator runs, before any SQL.
"""

from __future__ import annotations

import functools
import inspect
import math
import typing
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeAlias

from kanthorq import bodies
from kanthorq.errors import MAX_DELAY, ConfigError
from kanthorq.ids import validate_name
from kanthorq.limits import NO_LIMITS, Limits, Rate
from kanthorq.message import Message
from kanthorq.policies import BackoffFn, Exponential
from kanthorq.store import ConsumerSpec
from kanthorq.subjects import validate_filters

Handler: TypeAlias = Callable[[Any], Awaitable[None]]
DiscardHook: TypeAlias = Callable[[Message, BaseException], Awaitable[None]]
MAX_RETRIES_LIMIT = 32_766  # attempt_count is a SMALLINT


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscription:
    name: str
    stream: str
    includes: tuple[str, ...]
    excludes: tuple[str, ...]
    handler: Handler
    decode_as: Any  # None: the handler takes the Message itself
    max_retries: int
    backoff: BackoffFn
    concurrency: int
    visibility_timeout: float
    on_discard: DiscardHook | None
    limits: Limits = NO_LIMITS

    @property
    def attempt_max(self) -> int:
        return self.max_retries + 1

    def spec(self) -> ConsumerSpec:
        return ConsumerSpec(
            name=self.name,
            stream=self.stream,
            includes=self.includes,
            excludes=self.excludes,
            attempt_max=self.attempt_max,
            visibility_timeout_ms=round(self.visibility_timeout * 1000),
            limits=self.limits,
        )


def _decode_target(fn: Callable[..., Any]) -> Any:
    """None when the handler takes a Message, else the type to decode the body into."""
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    label = getattr(fn, "__qualname__", repr(fn))
    if len(params) != 1:
        raise ConfigError(
            f"handler {label} must take exactly one argument (the message), it takes {len(params)}"
        )
    try:
        hints = typing.get_type_hints(fn.func if isinstance(fn, functools.partial) else fn)
    except Exception as exc:
        raise ConfigError(f"handler {label}: cannot read its annotations: {exc}") from exc
    target = hints.get(params[0].name, Message)
    if target is Message or target is Any:
        return None
    try:
        bodies.decoder(target)  # a type no body decodes into is refused now, not per event
    except ConfigError as exc:
        raise ConfigError(f"handler {label}: {exc}") from None
    return target


def check_subjects(subjects: object) -> None:
    """``@app.subscribe`` without its parentheses would pass the handler as the subjects
    and register nothing."""
    if callable(subjects) and not isinstance(subjects, str):
        name = getattr(subjects, "__name__", "handler")
        raise TypeError(
            f"@app.subscribe needs its subjects: write @app.subscribe('order.created', ...) "
            f"above {name}, not @app.subscribe"
        )


def _check_number(
    name: str, value: object, *, minimum: float, maximum: float = math.inf, integer: bool = False
) -> None:
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ConfigError(f"{name} must be {'an int' if integer else 'a number'}, got {value!r}")
    assert isinstance(value, int | float)
    if not (minimum <= value <= maximum and value < math.inf):
        bounds = f">= {minimum}" if maximum == math.inf else f"from {minimum} to {maximum:g}"
        raise ConfigError(f"{name} must be a finite number {bounds}, got {value!r}")


def make_subscription(
    fn: Handler,
    *,
    subjects: str | Iterable[str],
    exclude: str | Iterable[str],
    consumer: str | None,
    stream: str,
    max_retries: int,
    backoff: BackoffFn | None,
    concurrency: int,
    visibility_timeout: float,
    on_discard: DiscardHook | None,
    max_running: int | None = None,
    rate: Rate | None = None,
) -> Subscription:
    if not inspect.iscoroutinefunction(fn):
        raise ConfigError(
            f"handler {getattr(fn, '__qualname__', fn)!r} must be an async def function"
        )
    includes = validate_filters(subjects, "subjects")
    if not includes:
        raise ConfigError("subscribe() needs at least one subject filter")
    _check_number("max_retries", max_retries, minimum=0, integer=True)
    if max_retries > MAX_RETRIES_LIMIT:
        raise ConfigError(f"max_retries must be <= {MAX_RETRIES_LIMIT}, got {max_retries}")
    _check_number("concurrency", concurrency, minimum=1, integer=True)
    _check_number("visibility_timeout", visibility_timeout, minimum=0.001, maximum=MAX_DELAY)
    if backoff is not None and not callable(backoff):
        raise ConfigError(f"backoff must be a policy or a callable attempt -> seconds: {backoff!r}")
    if on_discard is not None and not inspect.iscoroutinefunction(on_discard):
        raise ConfigError("on_discard must be an async def function (message, error)")
    if consumer is None:
        consumer = getattr(fn, "__name__", None)
        if consumer is None:
            raise ConfigError(f"handler {fn!r} has no __name__: give it one with consumer=...")
    return Subscription(
        name=validate_name(consumer, "consumer"),
        stream=validate_name(stream, "stream"),
        includes=includes,
        excludes=validate_filters(exclude, "exclude"),
        handler=fn,
        decode_as=_decode_target(fn),
        max_retries=max_retries,
        backoff=backoff or Exponential(),
        concurrency=concurrency,
        visibility_timeout=float(visibility_timeout),
        on_discard=on_discard,
        limits=Limits.build(max_running, rate),
    )
