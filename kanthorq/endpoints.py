"""``/metrics``, ``/healthz`` and ``/readyz`` over HTTP, for ``kanthorq run --metrics-port``.

A tiny HTTP/1.1 server on asyncio streams, in the workers' own event loop (so ``/healthz``
answering means the loop answers): one GET per connection, nothing else. It only calls
:mod:`kanthorq.metrics` and :mod:`kanthorq.health`; it has no SQL of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from kanthorq import health
from kanthorq.errors import ConfigError

if TYPE_CHECKING:
    from kanthorq.app import App

logger = logging.getLogger(__name__)

READ_TIMEOUT = 5.0
MAX_HEADERS = 100
REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
Response = tuple[int, str, bytes]  # status, content type, body
Route = Callable[[str], Awaitable[Response]]  # given the Accept header


def parse_address(text: str) -> tuple[str, int]:
    """``[HOST:]PORT`` (HOST defaults to every interface, 0.0.0.0)."""
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise ConfigError(
            f"--metrics-port takes [HOST:]PORT with PORT from 0 to 65535, got {text!r}"
        )
    return host.strip("[]") or "0.0.0.0", number


def _report(report: health.Report, accept: str) -> Response:
    status = 200 if report.ok else 503
    if "json" in accept:
        return status, "application/json", json.dumps(report.as_dict()).encode()
    return status, "text/plain; charset=utf-8", report.text().encode()


def routes(app: App, probes: health.Health, metrics: bool = True) -> dict[str, Route]:
    """The endpoints of ``app``: the health probes, and ``/metrics`` when ``metrics``."""

    async def healthz(accept: str) -> Response:
        return _report(probes.live(), accept)

    async def readyz(accept: str) -> Response:
        return _report(await probes.ready(), accept)

    table: dict[str, Route] = {"/healthz": healthz, "/readyz": readyz}
    if metrics:
        import kanthorq.metrics

        async def scrape(accept: str) -> Response:
            body, content_type = kanthorq.metrics.render(None, accept)
            return 200, content_type, body

        table["/metrics"] = scrape
    return table


async def _request(reader: asyncio.StreamReader) -> tuple[str, str, str]:
    """The method, path and Accept header of one request."""
    line = await reader.readline()
    parts = line.decode("latin-1").split()
    method, target = (parts[0], parts[1]) if len(parts) >= 2 else ("", "")
    accept = ""
    for _ in range(MAX_HEADERS):
        header = await reader.readline()
        if header in (b"\r\n", b"\n", b""):
            break
        name, _, value = header.decode("latin-1").partition(":")
        if name.strip().lower() == "accept":
            accept = value.strip()
    return method, target.split("?", 1)[0], accept


class Server:
    """The endpoints served on one address."""

    def __init__(self, table: dict[str, Route]) -> None:
        self._routes = table
        self.paths = tuple(table)
        self._server: asyncio.Server | None = None
        self.address: tuple[str, int] | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._handle, host, port)
        sockname = self._server.sockets[0].getsockname()
        self.address = (str(sockname[0]), int(sockname[1]))
        return self.address

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _respond(self, method: str, path: str, accept: str) -> Response:
        route = self._routes.get(path)
        if route is None:
            return 404, "text/plain", f"not found; try {', '.join(self._routes)}\n".encode()
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET and HEAD\n"
        return await route(accept)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            method, path, accept = await asyncio.wait_for(_request(reader), READ_TIMEOUT)
            status, content_type, body = await self._respond(method, path, accept)
            head = (
                f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, ConnectionError) as exc:
            logger.debug("endpoints: request dropped: %s: %s", type(exc).__name__, exc)
        except Exception:
            logger.exception("endpoints: the request failed")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def serving(app: App, address: str, *, metrics: bool = True) -> AsyncIterator[Server]:
    """Serve ``app``'s endpoints on ``address`` (``[HOST:]PORT``) while the block runs;
    it enables the metrics (when ``metrics``) and health hooks of ``app``."""
    host, port = parse_address(address)
    if metrics:
        import kanthorq.metrics  # a missing extra fails here, before anything is served

        kanthorq.metrics.enable(app)
    server = Server(routes(app, health.enable(app), metrics))
    bound = await server.start(host, port)
    logger.info(
        "serving %s on http://%s:%d",
        ", ".join(server.paths),
        bound[0],
        bound[1],
        extra={"host": bound[0], "port": bound[1]},
    )
    try:
        yield server
    finally:
        await server.close()
