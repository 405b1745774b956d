"""Publishing over HTTP: an ASGI app (Starlette) that publishes events and reads them back.

``kanthorq.http.app(kq_app, tokens=...)`` is the app; mount it in a FastAPI or Starlette
service, or run it with ``kanthorq serve``. It needs ``pip install 'kanthorq[http]'``
(starlette and uvicorn), imported here only, when :func:`app` is called.

The endpoints (each needs ``Authorization: Bearer <token>``; the OpenAPI document at
``GET /v1/openapi.json`` does not):

- ``POST /v1/streams/{stream}/events``: one event; ``201 {"id": ...}``, or ``200`` with the
  first event's id when its ``key`` is taken.
- ``POST /v1/streams/{stream}/events:batch``: a JSON array or NDJSON lines, all written
  together by one ``publish_many``, or none.
- ``GET /v1/streams/{stream}/events/{id}``: a stored event.
- ``GET /v1/consumers/{consumer}/tasks/{event_id}``: a task's state.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from kanthorq.extras import needs
from kanthorq.tokens import Token, Tokens

if TYPE_CHECKING:
    from kanthorq.app import App

DEFAULT_MAX_BODY_SIZE = 1024 * 1024  # bytes of a request's body
DEFAULT_MAX_BATCH = 1000  # events of a batch


def app(
    kq_app: App,
    *,
    tokens: Tokens | Iterable[Token | str],
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> Any:
    """The ASGI app (a ``starlette.applications.Starlette``) that publishes to ``kq_app``.

    ``tokens``: the bearer tokens it accepts (a :class:`~kanthorq.tokens.Tokens`, or
    Tokens and plain secrets, which get every scope); at least one. ``max_body_size``: the
    largest request body in bytes (a batch's whole body counts), refused with 413 before it
    is read whole; each event's body is limited by the app's ``max_body_size`` too.
    ``max_batch``: the most events in one batch.

    Its lifespan opens ``kq_app`` and closes it. Mounted inside another app, whose lifespan
    does not run it, it opens ``kq_app`` at the first request instead: open and close
    ``kq_app`` in your own lifespan then. A database it cannot reach answers 503 and is
    tried again at a later request.
    """
    with needs("http"):
        from kanthorq.http.server import build

    return build(
        kq_app,
        tokens=_tokens(tokens),
        max_body_size=max_body_size,
        max_batch=max_batch,
    )


def _tokens(tokens: Tokens | Iterable[Token | str]) -> Tokens:
    from kanthorq.errors import ConfigError

    if isinstance(tokens, str):
        raise ConfigError("tokens must be a Tokens or a list of tokens, not one str")
    if not isinstance(tokens, Tokens):
        made = [
            t if isinstance(t, Token) else Token(t, name=f"token {i + 1}")
            for i, t in enumerate(tokens)
        ]
        tokens = Tokens(made)
    if not tokens:
        raise ConfigError(
            "the HTTP publisher needs at least one token; it accepts no request without one"
        )
    return tokens


__all__ = ["DEFAULT_MAX_BATCH", "DEFAULT_MAX_BODY_SIZE", "app"]
