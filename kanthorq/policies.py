"""Retry policies: how long a failed task waits before its next attempt."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from kanthorq.errors import MAX_DELAY, ConfigError

BackoffFn: TypeAlias = Callable[[int], float]


def _check(name: str, value: float, *, lower: float = 0.0, upper: float = MAX_DELAY) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if not (lower <= value <= upper and (isinstance(value, int) or math.isfinite(value))):
        raise ConfigError(
            f"{name} must be a finite number from {lower:g} to {upper:g}, got {value!r}"
        )


def _jittered(delay: float, jitter: float, cap: float) -> float:
    if jitter:
        delay *= 1.0 + random.uniform(-jitter, jitter)
    return min(max(delay, 0.0), cap)


@dataclass(frozen=True, slots=True, kw_only=True)
class Exponential:
    """``base * factor ** (attempt - 1)`` seconds, capped at ``cap``, with +/- ``jitter``."""

    base: float = 1.0
    factor: float = 2.0
    cap: float = 300.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        _check("Exponential.base", self.base)
        _check("Exponential.factor", self.factor, lower=1.0, upper=math.inf)
        _check("Exponential.cap", self.cap)
        _check("Exponential.jitter", self.jitter, upper=1.0)

    def __call__(self, attempt: int) -> float:
        exponent = max(attempt - 1, 0)
        if self.base == 0:
            return 0.0
        try:
            delay = min(self.base * float(self.factor) ** exponent, self.cap)
        except OverflowError:  # factor ** exponent is past any float, so past the cap
            delay = self.cap
        return _jittered(delay, self.jitter, self.cap)


@dataclass(frozen=True, slots=True, kw_only=True)
class Fixed:
    """The same ``delay`` seconds before every retry, with +/- ``jitter``."""

    delay: float = 5.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        _check("Fixed.delay", self.delay)
        _check("Fixed.jitter", self.jitter, upper=1.0)

    def __call__(self, attempt: int) -> float:
        return _jittered(self.delay, self.jitter, self.delay * (1 + self.jitter))


@dataclass(frozen=True, slots=True, kw_only=True)
class Linear:
    """``base + step * (attempt - 1)`` seconds, capped at ``cap``, with +/- ``jitter``."""

    base: float = 1.0
    step: float = 1.0
    cap: float = 300.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        _check("Linear.base", self.base)
        _check("Linear.step", self.step)
        _check("Linear.cap", self.cap)
        _check("Linear.jitter", self.jitter, upper=1.0)

    def __call__(self, attempt: int) -> float:
        steps = max(attempt - 1, 0)
        if self.step and steps > (self.cap - self.base) / self.step:
            delay = self.cap
        else:
            delay = min(self.base + self.step * steps, self.cap)
        return _jittered(delay, self.jitter, self.cap)


def delay_for(backoff: BackoffFn, attempt: int) -> float:
    """Call a backoff policy and check what it gives: a finite number of seconds >= 0."""
    value = backoff(attempt)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"backoff returned {value!r} for attempt {attempt}; want seconds >= 0")
    if isinstance(value, int):  # exact: a huge int has no float
        value = min(max(value, 0), MAX_DELAY)
    if not math.isfinite(value):
        raise ConfigError(f"backoff returned {value!r} for attempt {attempt}; want seconds >= 0")
    return min(max(float(value), 0.0), MAX_DELAY)
