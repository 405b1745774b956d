"""Retry policies: bounded, never overflowing, and strict about their parameters."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kanthorq
from kanthorq.errors import MAX_DELAY, ConfigError
from kanthorq.policies import delay_for

ATTEMPTS = st.integers(min_value=1, max_value=10**6)
SECONDS = st.floats(min_value=0, max_value=MAX_DELAY)
JITTER = st.floats(min_value=0, max_value=1, allow_nan=False)
FACTOR = st.floats(min_value=1, allow_nan=False, allow_infinity=False)

fast = settings(max_examples=300, deadline=None)


def _finite_in(value: float, low: float, high: float) -> bool:
    return isinstance(value, float) and math.isfinite(value) and low <= value <= high


@fast
@given(base=SECONDS, factor=FACTOR, cap=SECONDS, jitter=JITTER, attempt=ATTEMPTS)
def test_exponential_is_within_cap(
    base: float, factor: float, cap: float, jitter: float, attempt: int
) -> None:
    policy = kanthorq.Exponential(base=base, factor=factor, cap=cap, jitter=jitter)
    assert _finite_in(policy(attempt), 0.0, cap)
    assert _finite_in(delay_for(policy, attempt), 0.0, cap)


@fast
@given(base=SECONDS, step=SECONDS, cap=SECONDS, jitter=JITTER, attempt=ATTEMPTS)
def test_linear_is_within_cap(
    base: float, step: float, cap: float, jitter: float, attempt: int
) -> None:
    policy = kanthorq.Linear(base=base, step=step, cap=cap, jitter=jitter)
    assert _finite_in(policy(attempt), 0.0, cap)


@fast
@given(delay=SECONDS, jitter=JITTER, attempt=ATTEMPTS)
def test_fixed_is_within_its_jitter(delay: float, jitter: float, attempt: int) -> None:
    value = kanthorq.Fixed(delay=delay, jitter=jitter)(attempt)
    assert math.isfinite(value)
    assert delay * (1 - jitter) * (1 - 1e-12) <= value <= delay * (1 + jitter) * (1 + 1e-12)


@fast
@given(
    base=st.floats(min_value=0, max_value=1e6),
    factor=st.floats(min_value=1, max_value=100),
    cap=st.floats(min_value=0, max_value=1e9),
    attempts=st.lists(ATTEMPTS, min_size=2, max_size=10),
)
def test_without_jitter_delays_never_shrink(
    base: float, factor: float, cap: float, attempts: list[int]
) -> None:
    for policy in (
        kanthorq.Exponential(base=base, factor=factor, cap=cap, jitter=0),
        kanthorq.Linear(base=base, step=factor, cap=cap, jitter=0),
    ):
        delays = [policy(a) for a in sorted(attempts)]
        assert delays == sorted(delays), (policy, sorted(attempts), delays)


def test_exponential_values() -> None:
    policy = kanthorq.Exponential(base=1, factor=2, cap=300, jitter=0)
    assert [policy(a) for a in range(1, 11)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert policy(10**6) == 300
    assert policy(10**18) == 300
    assert policy(0) == 1  # attempts below 1 act like the first
    assert kanthorq.Exponential(base=0, factor=2, cap=300, jitter=0)(50) == 0
    assert kanthorq.Exponential(base=5, factor=1, cap=300, jitter=0)(10**6) == 5
    assert kanthorq.Exponential(base=10, factor=2, cap=3, jitter=0)(1) == 3
    assert kanthorq.Exponential(base=1, factor=10**400, cap=3, jitter=0)(2) == 3


def test_linear_values() -> None:
    policy = kanthorq.Linear(base=2, step=3, cap=20, jitter=0)
    assert [policy(a) for a in range(1, 9)] == [2, 5, 8, 11, 14, 17, 20, 20]
    assert policy(10**6) == 20
    assert kanthorq.Linear(base=7, step=0, cap=20, jitter=0)(10**6) == 7


def test_fixed_values() -> None:
    assert [kanthorq.Fixed(delay=5)(a) for a in (1, 2, 10**6)] == [5, 5, 5]


def test_jitter_spreads_delays() -> None:
    policy = kanthorq.Exponential(base=100, factor=2, cap=1000, jitter=0.5)
    values = {policy(1) for _ in range(50)}
    assert len(values) > 1
    assert all(50 <= v <= 150 for v in values)


def test_extreme_but_finite_parameters() -> None:
    biggest = 1.7976931348623157e308
    tiniest = 5e-324
    for policy in (
        kanthorq.Exponential(base=1, factor=2, cap=MAX_DELAY, jitter=0),
        kanthorq.Exponential(base=1, factor=2, cap=MAX_DELAY, jitter=1),
        kanthorq.Exponential(base=tiniest, factor=2, cap=300, jitter=0),
        kanthorq.Exponential(base=MAX_DELAY, factor=biggest, cap=MAX_DELAY, jitter=1),
        kanthorq.Exponential(base=1, factor=1.0000001, cap=MAX_DELAY, jitter=1),
        kanthorq.Linear(base=MAX_DELAY, step=MAX_DELAY, cap=MAX_DELAY, jitter=1),
        kanthorq.Linear(base=0, step=tiniest, cap=MAX_DELAY, jitter=1),
        kanthorq.Fixed(delay=MAX_DELAY, jitter=1),
    ):
        for attempt in (1, 2, 1023, 1024, 1025, 1075, 32_767, 10**6, 10**18):
            value = policy(attempt)
            assert math.isfinite(value)
            assert 0 <= value <= 2 * MAX_DELAY
            # what the worker stores: milliseconds in a BIGINT
            assert round(delay_for(policy, attempt) * 1000) < 2**63 - 2**42


def test_delays_from_callables_fit_a_bigint() -> None:
    assert delay_for(lambda attempt: 1e300, 1) == MAX_DELAY
    assert delay_for(lambda attempt: 10**400, 1) == MAX_DELAY


BAD_PARAMETERS: list[tuple[type[Any], str, object]] = [
    (kanthorq.Exponential, "base", -1),
    (kanthorq.Exponential, "base", math.nan),
    (kanthorq.Exponential, "base", math.inf),
    (kanthorq.Exponential, "base", "1"),
    (kanthorq.Exponential, "base", None),
    (kanthorq.Exponential, "base", True),
    (kanthorq.Exponential, "factor", 0.5),
    (kanthorq.Exponential, "factor", -2),
    (kanthorq.Exponential, "factor", math.inf),
    (kanthorq.Exponential, "cap", -0.001),
    (kanthorq.Exponential, "cap", math.inf),
    (kanthorq.Exponential, "cap", math.nan),
    (kanthorq.Exponential, "cap", 1e300),
    (kanthorq.Exponential, "base", 10**400),
    (kanthorq.Exponential, "cap", 10**400),
    (kanthorq.Exponential, "jitter", -0.1),
    (kanthorq.Exponential, "jitter", 1.5),
    (kanthorq.Exponential, "jitter", math.nan),
    (kanthorq.Linear, "base", -1),
    (kanthorq.Linear, "step", -1),
    (kanthorq.Linear, "step", math.inf),
    (kanthorq.Linear, "cap", math.nan),
    (kanthorq.Linear, "cap", math.inf),
    (kanthorq.Linear, "jitter", 2),
    (kanthorq.Fixed, "delay", -5),
    (kanthorq.Fixed, "delay", math.inf),
    (kanthorq.Fixed, "delay", math.nan),
    (kanthorq.Fixed, "delay", "5"),
    (kanthorq.Fixed, "jitter", -1),
]


@pytest.mark.parametrize(("cls", "field", "value"), BAD_PARAMETERS)
def test_bad_parameters_are_refused(cls: type[Any], field: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        cls(**{field: value})
    assert isinstance(info.value, kanthorq.KanthorQError)
    assert f"{cls.__name__}.{field}" in str(info.value)


@pytest.mark.parametrize(
    "returned", [math.nan, math.inf, -math.inf, "5", None, True, [1]], ids=repr
)
def test_delay_for_refuses_what_is_not_seconds(returned: object) -> None:
    with pytest.raises(ConfigError, match="backoff returned"):
        delay_for(lambda attempt: returned, 3)  # type: ignore[arg-type, return-value]


def test_delay_for_accepts_callables() -> None:
    assert delay_for(lambda attempt: attempt * 2, 3) == 6.0
    assert delay_for(lambda attempt: -4, 1) == 0.0  # negative means now
    assert delay_for(kanthorq.Fixed(delay=1.5), 1) == 1.5


@pytest.mark.parametrize("delay", [-1, math.nan, math.inf, 1e300, "1", True], ids=repr)
def test_retry_refuses_bad_delays(delay: object) -> None:
    with pytest.raises(ConfigError, match="delay"):
        kanthorq.Retry(delay=delay)  # type: ignore[arg-type]


def test_retry_accepts_seconds() -> None:
    assert kanthorq.Retry(delay=0).delay == 0
    assert kanthorq.Retry(delay=2.5).delay == 2.5
    assert kanthorq.Retry().delay is None
