"""Bearer tokens for kanthorq's web pieces (the dashboard and the HTTP publisher): one way of
checking them, whichever server asks.

A :class:`Token` is a secret with what it may do: which ``scopes`` (``read``, ``publish``,
``admin``) and, optionally, which streams. :meth:`Tokens.match` compares a presented secret
with every known one in constant time, so neither a near miss nor the number of tokens
shows in the time an answer takes.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

SCOPES = frozenset({"read", "publish", "admin"})


@dataclass(frozen=True, slots=True)
class Token:
    """A secret and what it may do. ``streams`` is None for every stream."""

    secret: str
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

    def match(self, presented: str | None) -> Token | None:
        """The token whose secret is ``presented``, or None. Every known token is compared,
        each in constant time."""
        if not presented:
            return None
        digest = _digest(presented)
        found: Token | None = None
        for known, token in self._known:
            if hmac.compare_digest(known, digest):
                found = token
        return found

    def from_header(self, authorization: str | None) -> Token | None:
        """The token of an ``Authorization: Bearer <secret>`` header, or None."""
        return self.match(bearer(authorization))


def bearer(authorization: str | None) -> str | None:
    """The secret of an ``Authorization: Bearer <secret>`` header value, or None."""
    if not authorization:
        return None
    scheme, _, secret = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return secret.strip() or None
