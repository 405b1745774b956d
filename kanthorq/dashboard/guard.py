"""Who may do what on the dashboard: its tokens (:mod:`kanthorq.tokens`), the session cookie
that signing in sets, and the CSRF token of its forms.

Without a token the dashboard is read-only: every page shows, no action runs. With one,
every request needs it (the cookie that the sign-in form sets, or ``Authorization: Bearer``),
and an action also needs the token's ``admin`` scope and its form's CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac

from kanthorq.tokens import Token, Tokens

COOKIE = "kanthorq_dashboard"
_CSRF_CONTEXT = b"kanthorq dashboard csrf"
_SESSION_CONTEXT = b"kanthorq dashboard session"


class Guard:
    __slots__ = ("tokens",)

    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens

    @property
    def read_only(self) -> bool:
        """No token: the dashboard shows, and changes nothing."""
        return not self.tokens

    def token(self, authorization: str | None, cookie: str | None) -> Token | None:
        """The token a request presents, by its header or its cookie; None when none."""
        return self.tokens.from_header(authorization) or self.tokens.match_derived(
            cookie, self.session
        )

    @staticmethod
    def session(token: Token) -> str:
        """The session cookie's value for ``token``: derived from its secret, so a cookie
        that leaks (a browser profile, a proxy's log) does not give the token away."""
        return _derived(token, _SESSION_CONTEXT)

    @staticmethod
    def csrf(token: Token) -> str:
        """The CSRF token of ``token``'s forms: derived from its secret, never the secret."""
        return _derived(token, _CSRF_CONTEXT)

    def csrf_matches(self, token: Token, presented: str | None) -> bool:
        expected = self.csrf(token).encode()
        return hmac.compare_digest(expected, (presented or "").encode())


def _derived(token: Token, context: bytes) -> str:
    return hmac.new(token.secret.encode(), context, hashlib.sha256).hexdigest()
