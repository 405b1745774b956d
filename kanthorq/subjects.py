"""Subjects and subject filters, following the NATS rules.

A subject is one or more tokens joined by ``.``. A token is one or more characters that are
not white space, control characters, ``.``, ``*`` or ``>``. A filter may also use ``*`` as a
whole token (exactly one token) and ``>`` as its last whole token (one or more tokens).

The SQL side (``kanthorq_subject_regex`` in the first migration) turns filters into regular
expressions; :func:`matches` is the Python equivalent and the tests compare the two.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from kanthorq.errors import InvalidSubject

MAX_SUBJECT_LENGTH = 256
_BAD_CHAR = re.compile(r"[\s\x00-\x1f\x7f-\x9f.*>]")


def _check_common(subject: object, what: str) -> list[str]:
    if not isinstance(subject, str):
        raise InvalidSubject(f"{what} must be a str, got {type(subject).__name__}")
    if not subject:
        raise InvalidSubject(f"{what} must not be empty")
    if len(subject.encode("utf-8", "surrogatepass")) > MAX_SUBJECT_LENGTH:
        raise InvalidSubject(
            f"{what} is longer than {MAX_SUBJECT_LENGTH} bytes: {subject[:40]!r}..."
        )
    if any(0xD800 <= ord(c) <= 0xDFFF for c in subject):
        raise InvalidSubject(f"{what} {subject!r} contains a lone surrogate")
    tokens = subject.split(".")
    if any(not t for t in tokens):
        raise InvalidSubject(f"{what} {subject!r} has an empty token (leading, trailing or '..')")
    return tokens


_VALID: dict[str, None] = {}  # subjects seen valid: publishing checks the same few again
_VALID_MAX = 4096


def validate_subject(subject: object) -> str:
    """Return ``subject`` if it is a valid subject to publish to, else raise InvalidSubject."""
    if type(subject) is str and subject in _VALID:
        return subject
    _check_subject(subject)
    assert isinstance(subject, str)
    if len(_VALID) >= _VALID_MAX:
        _VALID.clear()
    _VALID[subject] = None
    return subject


def _check_subject(subject: object) -> None:
    tokens = _check_common(subject, "subject")
    for token in tokens:
        if _BAD_CHAR.search(token):
            raise InvalidSubject(
                f"subject {subject!r}: token {token!r} contains white space, a control "
                "character or a wildcard ('*', '>'); wildcards are only for filters"
            )


def validate_filter(pattern: object) -> str:
    """Return ``pattern`` if it is a valid subject filter, else raise InvalidSubject."""
    tokens = _check_common(pattern, "subject filter")
    last = len(tokens) - 1
    for i, token in enumerate(tokens):
        if token == "*":
            continue
        if token == ">":
            if i != last:
                raise InvalidSubject(f"subject filter {pattern!r}: '>' must be the last token")
            continue
        if _BAD_CHAR.search(token):
            raise InvalidSubject(
                f"subject filter {pattern!r}: token {token!r} contains white space, a control "
                "character, or a '*' or '>' that is not a whole token"
            )
    assert isinstance(pattern, str)
    return pattern


def validate_filters(patterns: str | Iterable[str], what: str) -> tuple[str, ...]:
    """Validate one filter or a list of them; an empty list is refused for includes."""
    if isinstance(patterns, str):
        items: Sequence[object] = [patterns]
    elif isinstance(patterns, Iterable):
        items = list(patterns)
    else:
        raise InvalidSubject(
            f"{what} must be a subject filter or a list of them, got {type(patterns).__name__}"
        )
    result = tuple(validate_filter(p) for p in items)
    if len(set(result)) != len(result):
        raise InvalidSubject(f"{what} has duplicate filters: {list(result)!r}")
    return result


def matches(pattern: str, subject: str) -> bool:
    """Whether the subject matches the filter (both assumed valid)."""
    ptoks = pattern.split(".")
    stoks = subject.split(".")
    for i, ptok in enumerate(ptoks):
        if ptok == ">":
            return len(stoks) > i
        if i >= len(stoks):
            return False
        if ptok != "*" and ptok != stoks[i]:
            return False
    return len(stoks) == len(ptoks)


def selected(includes: Sequence[str], excludes: Sequence[str], subject: str) -> bool:
    """Whether a consumer with these filters takes an event with this subject."""
    return any(matches(p, subject) for p in includes) and not any(
        matches(p, subject) for p in excludes
    )
