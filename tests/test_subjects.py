"""Subjects and filters (NATS rules), and the SQL matcher agreeing with the Python one."""

from __future__ import annotations

import json
import string

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kanthorq.errors import InvalidSubject, KanthorQError
from kanthorq.subjects import (
    matches,
    selected,
    validate_filter,
    validate_filters,
    validate_subject,
)

VALID_SUBJECTS = [
    "a",
    "order.cancelled",
    "a.b.c.d.e.f",
    "Order_Created-v2",
    "x1.2y.3",
    "é.日本.🎉",
    "a-b.c_d.e:f.g/h",
    "price$.100%.#tag",
    "[x].(y).{z}.^$.\\.|?+",
    "a" * 256,
    ".".join(["ab"] * 85) + ".a",  # 256 characters, many tokens
    "é" * 128,  # 256 bytes in UTF-8
]

INVALID_SUBJECTS = [
    "",
    "a..b",
    "a.",
    ".a",
    ".",
    "..",
    " a",
    "a ",
    "a b",
    "a\tb",
    "a\nb",
    "a\r",
    "\x00",
    "a\x00b",
    "a\x7fb",
    "a\x9bb",  # a C1 control character
    "a\u00a0b",  # no-break space
    "a\u2028b",  # line separator
    "a\u3000b",  # ideographic space
    "a\ud800b",  # lone surrogate
    "a" * 257,
    "a" * 300,
    "é" * 129,  # 258 bytes
    "*",
    ">",
    "a.*",
    "a.>",
    "*.b",
    "a*",
    "a>",
    "a.b*c",
    "a.>.b",
]


@pytest.mark.parametrize("subject", VALID_SUBJECTS)
def test_valid_subject(subject: str) -> None:
    assert validate_subject(subject) == subject
    # every valid subject is also a valid (literal) filter that matches exactly itself
    assert validate_filter(subject) == subject
    assert matches(subject, subject)


@pytest.mark.parametrize("subject", INVALID_SUBJECTS)
def test_invalid_subject(subject: str) -> None:
    with pytest.raises(InvalidSubject) as info:
        validate_subject(subject)
    assert isinstance(info.value, KanthorQError)
    assert "subject" in str(info.value)


@pytest.mark.parametrize("value", [None, 1, b"a.b", ["a"], object()])
def test_subject_must_be_str(value: object) -> None:
    with pytest.raises(InvalidSubject, match="must be a str"):
        validate_subject(value)
    with pytest.raises(InvalidSubject, match="must be a str"):
        validate_filter(value)


VALID_FILTERS = [
    "a",
    "*",
    ">",
    "a.*",
    "a.>",
    "*.b",
    "*.*",
    "*.>",
    "a.*.c.>",
    "order.cancelled",
    "é.*.🎉",
    "[x].*.$",
]

INVALID_FILTERS = [
    "",
    "a..b",
    "a.",
    ".a",
    ".>",
    " a",
    "a.>.b",
    ">.a",
    ">.>",
    "a*",
    "*a",
    "a.b*",
    "a>",
    "a.>>",
    "**",
    "a.**",
    "\x00",
    "a b.*",
    "a" * 300,
]


@pytest.mark.parametrize("pattern", VALID_FILTERS)
def test_valid_filter(pattern: str) -> None:
    assert validate_filter(pattern) == pattern


@pytest.mark.parametrize("pattern", INVALID_FILTERS)
def test_invalid_filter(pattern: str) -> None:
    with pytest.raises(InvalidSubject, match="filter"):
        validate_filter(pattern)


def test_gt_not_last_names_the_rule() -> None:
    with pytest.raises(InvalidSubject, match="'>' must be the last token"):
        validate_filter("a.>.b")


def test_validate_filters() -> None:
    assert validate_filters("a.*", "subjects") == ("a.*",)
    assert validate_filters(["a.*", "b.>"], "subjects") == ("a.*", "b.>")
    assert validate_filters((), "exclude") == ()
    with pytest.raises(InvalidSubject, match="duplicate"):
        validate_filters(["a", "a"], "subjects")
    with pytest.raises(InvalidSubject):
        validate_filters(["a", "b..c"], "subjects")


MATCH_TABLE = [
    ("a", "a", True),
    ("a", "b", False),
    ("a", "a.b", False),
    ("a.b", "a", False),
    ("*", "a", True),
    ("*", "a.b", False),
    (">", "a", True),
    (">", "a.b.c", True),
    ("a.>", "a", False),
    ("a.>", "a.b", True),
    ("a.>", "a.b.c", True),
    ("a.>", "b.c", False),
    ("a.*", "a.b", True),
    ("a.*", "a.b.c", False),
    ("a.*", "a", False),
    ("*.b", "a.b", True),
    ("*.b", "a.c", False),
    ("*.*", "a.b", True),
    ("*.*", "a", False),
    ("a.*.c.>", "a.x.c.d", True),
    ("a.*.c.>", "a.x.c", False),
    ("a.*.c.>", "a.x.y.d", False),
    ("Order", "order", False),
    ("a$", "a$", True),
    ("a+", "aa", False),
    ("a|b", "a", False),
    ("(a)", "a", False),
    ("[ab]", "a", False),
    ("\\d", "1", False),
    ("é.*", "é.ü", True),
    ("e.*", "é.ü", False),
]


@pytest.mark.parametrize(("pattern", "subject", "expected"), MATCH_TABLE)
def test_matches_table(pattern: str, subject: str, expected: bool) -> None:
    assert matches(pattern, subject) is expected


async def test_sql_matches_table(db: asyncpg.Connection) -> None:
    patterns = [p for p, _, _ in MATCH_TABLE]
    subjects = [s for _, s, _ in MATCH_TABLE]
    assert await sql_matches(db, patterns, subjects) == [e for _, _, e in MATCH_TABLE]


def test_selected() -> None:
    assert selected(["order.>"], [], "order.created")
    assert not selected(["order.>"], ["order.created"], "order.created")
    assert selected(["order.>"], ["order.created"], "order.cancelled")
    assert not selected(["order.>"], ["*.cancelled"], "order.cancelled")
    assert selected(["a", "b"], [], "b")
    assert not selected([], [], "a")


# ---- the Python matcher agrees with kanthorq_subject_regex in SQL ------------------------

# punctuation (regex metacharacters above all), letters that fold case, and non-ASCII
_PUNCT = [c for c in string.punctuation if c not in ".*>"]
_SPECIAL = ["é", "É", "ß", "İ", "\u0131", "\u212a", "日", "本", "🎉", "ü", "\u200b", "\ufeff", "Ω"]
_TOKEN_CHARS = st.sampled_from([*_PUNCT, *_SPECIAL, "a", "A", "b", "0", "_", "-"])
_RANDOM_CHAR = st.characters(
    blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters=".*>"
)
_TOKEN = st.one_of(
    st.sampled_from(["a", "b", "ab", "\\", "a\\b", "(", ")", "[a]", "^", "$", "a+", "é"]),
    st.text(_TOKEN_CHARS, min_size=1, max_size=3),
    st.text(_RANDOM_CHAR, min_size=1, max_size=3),
).filter(lambda t: _is_valid_subject(t))


def _is_valid_subject(subject: str) -> bool:
    try:
        validate_subject(subject)
    except InvalidSubject:
        return False
    return True


@st.composite
def _pair(draw: st.DrawFn) -> tuple[str, str]:
    """A subject and a filter that often nearly matches it."""
    tokens = draw(st.lists(_TOKEN, min_size=1, max_size=5))
    subject = ".".join(tokens)
    ptoks = list(tokens)
    if draw(st.booleans()):  # a fresh pattern of the same vocabulary
        ptoks = draw(st.lists(_TOKEN, min_size=1, max_size=5))
    ptoks = [draw(st.sampled_from([t, t, "*"])) for t in ptoks]
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(ptoks)))
        ptoks = [*ptoks[:cut], ">"]
    pattern = ".".join(ptoks)
    return validate_filter(pattern), validate_subject(subject)


async def sql_matches(
    db: asyncpg.Connection, patterns: list[str], subjects: list[str]
) -> list[bool]:
    rows = await db.fetch(
        """
        SELECT s ~ kanthorq_subject_regex(p) AS m
        FROM unnest($1::TEXT[], $2::TEXT[]) WITH ORDINALITY AS t(p, s, i)
        ORDER BY i
        """,
        patterns,
        subjects,
    )
    return [row["m"] for row in rows]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(pairs=st.lists(_pair(), min_size=1, max_size=50))
async def test_python_matcher_agrees_with_sql(
    db: asyncpg.Connection, pairs: list[tuple[str, str]]
) -> None:
    patterns = [p for p, _ in pairs]
    subjects = [s for _, s in pairs]
    in_sql = await sql_matches(db, patterns, subjects)
    in_python = [matches(p, s) for p, s in pairs]
    disagree = [
        (p, s, py, sq)
        for p, s, py, sq in zip(patterns, subjects, in_python, in_sql, strict=True)
        if py != sq
    ]
    assert not disagree, disagree


@st.composite
def _consumer_case(draw: st.DrawFn) -> tuple[list[str], list[str], str]:
    """Include and exclude filters around one subject, as a consumer would have them."""
    pairs = draw(st.lists(_pair(), min_size=1, max_size=4))
    subject = pairs[0][1]
    patterns = list(dict.fromkeys(p for p, _ in pairs))
    cut = draw(st.integers(1, len(patterns)))
    return patterns[:cut], patterns[cut:], subject


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(cases=st.lists(_consumer_case(), min_size=1, max_size=30))
async def test_selected_agrees_with_the_conversion_filter(
    db: asyncpg.Connection, cases: list[tuple[list[str], list[str], str]]
) -> None:
    """The include/exclude test of convert.sql, fed the same arrays, agrees with selected()."""
    rows = await db.fetch(
        """
        SELECT x.s ~ ANY (ARRAY(
                   SELECT kanthorq_subject_regex(p) FROM unnest(x.inc) AS p)::TEXT[])
               AND NOT x.s ~ ANY (ARRAY(
                   SELECT kanthorq_subject_regex(p) FROM unnest(x.exc) AS p)::TEXT[]) AS m
        FROM (
            SELECT c->>'s' AS s, c->>'i' AS ord,
                   ARRAY(SELECT jsonb_array_elements_text(c->'inc'))::VARCHAR(256)[] AS inc,
                   ARRAY(SELECT jsonb_array_elements_text(c->'exc'))::VARCHAR(256)[] AS exc
            FROM jsonb_array_elements($1::JSONB) AS c
        ) AS x
        ORDER BY x.ord::INT
        """,
        json.dumps(
            [{"i": n, "s": s, "inc": inc, "exc": exc} for n, (inc, exc, s) in enumerate(cases)]
        ),
    )
    in_sql = [row["m"] for row in rows]
    in_python = [selected(inc, exc, s) for inc, exc, s in cases]
    assert in_sql == in_python, [
        (c, py) for c, py, sq in zip(cases, in_python, in_sql, strict=True) if py != sq
    ]
