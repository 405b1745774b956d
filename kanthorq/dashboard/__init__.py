"""The web dashboard: streams, consumers, tasks and their errors, with the task operations,
replay and drops; ``pip install 'kanthorq[dashboard]'``.

``kanthorq.dashboard.app(kq_app, token=...)`` is an ASGI app (Starlette, Jinja2 templates,
htmx served from this package: nothing from a CDN). Run it with ``kanthorq dashboard``, or
mount it under a prefix in your own FastAPI or Starlette app, behind your own auth. Its
routes call :mod:`kanthorq.admin` and render; they run no SQL of their own.

Safe by default: without a token it is read-only and says so; with one, every request needs
it, and each action is a POST with a CSRF token. Everything shown is escaped.
"""

from __future__ import annotations

from kanthorq.extras import needs

with needs("dashboard"):
    import jinja2  # noqa: F401
    import python_multipart  # noqa: F401  (Starlette reads the forms with it)
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401

from kanthorq.dashboard.web import Dashboard, app

__all__ = ["Dashboard", "app"]
