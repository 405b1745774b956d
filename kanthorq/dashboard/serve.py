"""``kanthorq dashboard``'s server: the dashboard on an app of its own, opened (without
migrating: only ``kanthorq migrate`` changes the schema) for as long as uvicorn serves."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from kanthorq.app import App
from kanthorq.dashboard.web import app as dashboard_app


def standalone(kq: App, token: str | None, refresh: float = 3.0) -> Starlette:
    """The dashboard at ``/``, with ``kq`` opened while it serves."""

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with kq:
            yield

    web = dashboard_app(kq, token=token, refresh=refresh)
    return Starlette(routes=[Mount("", app=web)], lifespan=lifespan)


def server(web: Starlette, host: str, port: int, log_level: str = "warning") -> uvicorn.Server:
    config = uvicorn.Config(
        web, host=host, port=port, log_level=log_level, lifespan="on", server_header=False
    )
    return uvicorn.Server(config)


def bound_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (0: any free port), for ``Server.serve``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(128)
    sock.setblocking(False)
    return sock
