"""Item 12: property tests (hypothesis): backoff bounds, the subject grammar, and the SQL
conversion filter agreeing with the Python matcher."""

from __future__ import annotations

import itertools
import math
import unicodedata

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kanthorq
from kanthorq.errors import MAX_DELAY, InvalidSubject
from kanthorq.ids import now_ms
from kanthorq.policies import delay_for
from kanthorq.store import ConsumerSpec
from kanthorq.subjects import selected, validate_filter, validate_subject
from tests.conftest import registry, task_table

BIGINT_MAX = 2**63 - 1
ATTEMPTS = st.integers(min_value=1, max_value=10**6)
SECONDS = st.floats(min_value=0, max_value=MAX_DELAY, allow_nan=False)
JITTER = st.floats(min_value=0, max_value=1, allow_nan=False)


def policies() -> st.SearchStrategy[tuple[object, float]]:
    """A policy and the largest delay it may give."""
    exponential = st.builds(
        lambda b, f, c, j: (kanthorq.Exponential(base=b, factor=f, cap=c, jitter=j), c),
        SECONDS,
        st.floats(min_value=1, max_value=1e300, allow_nan=False),
        SECONDS,
        JITTER,
    )
    linear = st.builds(
        lambda b, s, c, j: (kanthorq.Linear(base=b, step=s, cap=c, jitter=j), c),
        SECONDS,
        SECONDS,
        SECONDS,
        JITTER,
    )
    fixed = st.builds(
        lambda d, j: (kanthorq.Fixed(delay=d, jitter=j), d * (1 + j)), SECONDS, JITTER
    )
    return st.one_of(exponential, linear, fixed)


@settings(max_examples=500, deadline=None)
@given(policy=policies(), attempts=st.lists(ATTEMPTS, min_size=1, max_size=5))
def test_backoff_stays_within_zero_and_cap(
    policy: tuple[object, float], attempts: list[int]
) -> None:
    fn, cap = policy
    assert callable(fn)
    for attempt in [*attempts, 1, 10**6]:
        raw = fn(attempt)
        checked = delay_for(fn, attempt)
        for value in (raw, checked):
            assert isinstance(value, float)
            assert math.isfinite(value)
            assert 0.0 <= value <= cap * (1 + 1e-12)
        # the retry time the engine stores is a BIGINT of milliseconds
        assert now_ms() + round(checked * 1000) < BIGINT_MAX


@settings(max_examples=200, deadline=None)
@given(
    value=st.one_of(
        st.integers(min_value=-(10**400), max_value=10**400),
        st.floats(allow_nan=False, allow_infinity=False),
    ),
    attempt=ATTEMPTS,
)
def test_any_custom_backoff_value_is_clamped(value: float, attempt: int) -> None:
    delay = delay_for(lambda _attempt: value, attempt)
    assert 0.0 <= delay <= MAX_DELAY
    assert now_ms() + round(delay * 1000) < BIGINT_MAX


# ---- the subject grammar -----------------------------------------------------------------

ALPHABET = "ab.*> \t\n\x00\x1f\x7f\x85\xa0\u2028\u3000\u00e9\u65e5-_$\\[(|+?"


def forbidden(char: str) -> bool:
    """White space, control characters and the wildcards are not allowed in a token."""
    return char in "*>." or char.isspace() or unicodedata.category(char) == "Cc"


def nats_subject(text: str) -> bool:
    if not text or len(text.encode("utf-8")) > 256:
        return False
    tokens = text.split(".")
    return all(tokens) and not any(forbidden(c) for t in tokens for c in t)


def nats_filter(text: str) -> bool:
    if not text or len(text.encode("utf-8")) > 256:
        return False
    tokens = text.split(".")
    for i, token in enumerate(tokens):
        if token == "*" or (token == ">" and i == len(tokens) - 1):
            continue
        if not token or any(forbidden(c) for c in token):
            return False
    return True


def candidates() -> st.SearchStrategy[str]:
    token = st.one_of(
        st.text(alphabet=ALPHABET, max_size=4),
        st.sampled_from(["*", ">", "a", "order", "\u00e9t\u00e9"]),
        st.text(alphabet="ab", min_size=100, max_size=140),  # near the 256-byte limit
    )
    built = st.lists(token, min_size=1, max_size=4).map(".".join)
    return st.one_of(built, st.text(alphabet=ALPHABET, max_size=12), st.text(max_size=8))


@settings(max_examples=1000, deadline=None)
@given(text=candidates())
def test_subject_validation_is_exactly_the_nats_grammar(text: str) -> None:
    try:
        validate_subject(text)
        accepted = True
    except InvalidSubject:
        accepted = False
    assert accepted == nats_subject(text), text
    try:
        validate_filter(text)
        accepted = True
    except InvalidSubject:
        accepted = False
    assert accepted == nats_filter(text), text


# ---- the conversion filter (SQL) against the Python matcher -------------------------------

TOKENS = ["a", "b", "ab", "(b|a)", "[ab]", "a+", "$", "^a", "?", "\\", "\u00e9", "%", "_", "{1}"]
_names = itertools.count()


def subjects() -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(TOKENS), min_size=1, max_size=4).map(".".join)


def filters() -> st.SearchStrategy[str]:
    def build(tokens: list[str], tail: bool) -> str:
        return ".".join([*tokens, ">"] if tail else tokens)

    return st.builds(
        build,
        st.lists(st.sampled_from([*TOKENS[:6], "*", "*"]), min_size=1, max_size=3),
        st.booleans(),
    )


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    includes=st.lists(filters(), min_size=1, max_size=3, unique=True),
    excludes=st.lists(filters(), max_size=2, unique=True),
    events=st.lists(subjects(), min_size=1, max_size=40),
)
async def test_conversion_takes_exactly_what_the_python_matcher_selects(
    dsn: str, db: asyncpg.Connection, includes: list[str], excludes: list[str], events: list[str]
) -> None:
    n = next(_names)
    stream, consumer = f"s{n}", f"c{n}"
    app = kanthorq.App(dsn)
    async with app:
        ids = await app.publish_many([(s, b"") for s in events], stream=stream)
        spec = ConsumerSpec(
            name=consumer,
            stream=stream,
            includes=tuple(includes),
            excludes=tuple(excludes),
            attempt_max=1,
            visibility_timeout_ms=1000,
        )
        queries = await registry(app.pool, app.dsn).consumer(spec)
        converted = await queries.convert(app.pool, 1000)  # the engine's own statement
    assert converted.scanned == len(events)
    table = await task_table(db, consumer)
    got = {r["event_id"] for r in await db.fetch(f"SELECT event_id FROM {table}")}
    want = {i for i, s in zip(ids, events, strict=True) if selected(includes, excludes, s)}
    assert got == want, [
        (s, i in got) for i, s in zip(ids, events, strict=True) if (i in got) != (i in want)
    ]
