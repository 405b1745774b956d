"""Bearer tokens for kanthorq's web pieces (the dashboard and the HTTP publisher): one way of
checking them, whichever server asks.

A :class:`Token` is a secret with what it may do: which ``scopes`` (``read``, ``publish``,
``admin``) and, optionally, which streams. :meth:`Tokens.match` compares a presented secret
with every known one in constant time, so neither a near miss nor the number of tokens
shows in the time an answer takes.

A file of tokens (:meth:`Tokens.load`) holds one token per line: its secret, then any of
``name=``, ``scopes=`` and ``streams=`` (comma-separated lists), in any order. Blank lines
and lines starting with ``#`` are skipped (so a secret cannot start with ``#``, nor hold
white space). A token without ``scopes=`` has every scope; one
without ``streams=`` reaches every stream::

    # a service that publishes to orders and reads it back
    3f6c9e...  name=orders-svc  scopes=publish,read  streams=orders
    # a dashboard reader, every stream
    9a1b77...  name=grafana  scopes=read
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kanthorq.ids import validate_name

SCOPES = frozenset({"read", "publish", "admin"})


@dataclass(frozen=True, slots=True)
class Token:
    """A secret and what it may do. ``streams`` is None for every stream."""

    secret: str = field(repr=False)  # never in a log line
    name: str = "token"
    scopes: frozenset[str] = SCOPES
    streams: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if not self.secret or self.secret != self.secret.strip():
            raise ValueError(f"token {self.name!r}: the secret is empty or has spaces around it")
        unknown = set(self.scopes) - SCOPES
        if unknown:
            raise ValueError(
                f"token {self.name!r}: unknown scope {sorted(unknown)[0]!r}; "
                f"the scopes are {', '.join(sorted(SCOPES))}"
            )

    def allows(self, scope: str, stream: str | None = None) -> bool:
        """Whether this token may do ``scope`` (on ``stream``, when one is named)."""
        if scope not in self.scopes:
            return False
        return stream is None or self.streams is None or stream in self.streams


def _digest(secret: str) -> bytes:
    # equal-length inputs for compare_digest, whatever the secrets' lengths
    return hashlib.sha256(secret.encode()).digest()


def _pick(known: Iterable[tuple[bytes, Token]], presented: bytes) -> Token | None:
    """The token whose value is ``presented``: every one compared, each in constant time."""
    found: Token | None = None
    for value, token in known:
        if hmac.compare_digest(value, presented):
            found = token
    return found


class Tokens:
    """The tokens a server accepts. Empty means none is accepted."""

    __slots__ = ("_known",)

    def __init__(self, tokens: Iterable[Token] = ()) -> None:
        self._known = tuple((_digest(t.secret), t) for t in tokens)

    def __bool__(self) -> bool:
        return bool(self._known)

    def __len__(self) -> int:
        return len(self._known)

    @classmethod
    def of(cls, *secrets: str | None) -> Tokens:
        """Full-power tokens from plain secrets; None and empty ones are skipped."""
        return cls(Token(s, name=f"token {i + 1}") for i, s in enumerate(secrets) if s)

    def __iter__(self) -> Iterator[Token]:
        return iter(token for _, token in self._known)

    @classmethod
    def parse(cls, text: str, source: str = "tokens") -> Tokens:
        """The tokens of ``text`` in the format of a tokens file (see the module's doc); a
        line that is not valid is a ValueError naming ``source`` and the line's number."""
        found: list[Token] = []
        for number, line in enumerate(text.splitlines(), 1):
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            try:
                found.append(_token_of(words, f"line {number}"))
            except ValueError as exc:
                raise ValueError(f"{source}, line {number}: {exc}") from None
        secrets = [t.secret for t in found]
        if len(set(secrets)) != len(secrets):
            raise ValueError(f"{source}: two lines have the same secret")
        return cls(found)

    @classmethod
    def load(cls, path: str | Path) -> Tokens:
        """The tokens of the file at ``path`` (see the module's doc for its format)."""
        file = Path(path)
        return cls.parse(file.read_text(encoding="utf-8"), str(file))

    def match(self, presented: str | None) -> Token | None:
        """The token whose secret is ``presented``, or None. Every known token is compared,
        each in constant time."""
        if not presented:
            return None
        return _pick(self._known, _digest(presented))

    def match_derived(self, presented: str | None, derive: Callable[[Token], str]) -> Token | None:
        """The token for which ``derive`` (a value made from its secret, such as a session
        cookie's) gives ``presented``, or None; compared as :meth:`match` compares."""
        if not presented:
            return None
        return _pick(((derive(t).encode(), t) for t in self), presented.encode())

    def from_header(self, authorization: str | None) -> Token | None:
        """The token of an ``Authorization: Bearer <secret>`` header, or None."""
        return self.match(bearer(authorization))


_FIELDS = ("name", "scopes", "streams")


def _token_of(words: list[str], default_name: str) -> Token:
    secret, *rest = words
    if "=" in secret and secret.split("=", 1)[0] in _FIELDS:
        raise ValueError("a line starts with the secret, then name=, scopes=, streams=")
    fields: dict[str, str] = {}
    for word in rest:
        key, sep, value = word.partition("=")
        if not sep or key not in _FIELDS:
            raise ValueError(f"unknown field {word!r}: the fields are name=, scopes=, streams=")
        if key in fields:
            raise ValueError(f"{key}= is given twice")
        fields[key] = value
    scopes = _list(fields, "scopes")
    streams = _list(fields, "streams")
    for stream in streams or ():
        validate_name(stream, "stream")  # an InvalidName is a ValueError
    return Token(
        secret,
        name=fields.get("name") or default_name,
        scopes=SCOPES if scopes is None else scopes,
        streams=streams,
    )


def _list(fields: dict[str, str], key: str) -> frozenset[str] | None:
    if key not in fields:
        return None
    items = frozenset(item for item in fields[key].split(",") if item)
    if not items:
        raise ValueError(f"{key}= is empty")
    return items


def bearer(authorization: str | None) -> str | None:
    """The secret of an ``Authorization: Bearer <secret>`` header value, or None."""
    if not authorization:
        return None
    scheme, _, secret = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return secret.strip() or None
