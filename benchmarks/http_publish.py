"""W8: publishing over HTTP (``kanthorq serve``, issue 16), beside in-process publishing.

The server is ``kanthorq serve`` in a process of its own, as it is deployed (uvicorn, with
httptools and uvloop when installed: the ``http`` extra), on the benchmark's database, its
stream created before the clock as in W5. The load comes from this process through a
minimal HTTP/1.1 client on asyncio streams, one keep-alive connection per publisher: a
full client library (httpx, aiohttp) costs several times more CPU per request, and on a
small machine it would measure the client, not the server.

- ``single over HTTP``: ``publishers`` connections (W5's 16), each posting one event after
  another (``POST /v1/streams/default/events``, W5's payload) for ``publish_seconds``,
  after the same warm-up as W5. Compared with W5 (``publish()`` in-process) of the same
  round.
- ``batches over HTTP``: ``events`` events in batches of ``batch`` (W1's 20,000 in 500s),
  one connection, one batch after another (``events:batch``). Compared with W1.

Each result also has the server's CPU time per event (``server_cpu_us_per_event``, from
``/proc``; Linux only) and the load generator's (``client_cpu_us_per_event``): on a small
machine the three processes (PostgreSQL, server, client) share its cores.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from benchmarks.config import Config
from benchmarks.db import fresh_database
from benchmarks.payload import SUBJECT, batches, payload
from benchmarks.procs import ROOT
from benchmarks.systems import load

VARIANTS = ("single over HTTP", "batches over HTTP")
TOKEN = "bench-token"
STREAM = "default"  # the stream Kanthorq.install creates
READY_TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: a request, then its answer, in turn. A bare
    protocol (no streams): on a small machine the load generator's CPU is taken from the
    server's, so it should spend as little as it can."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = b""
        self._waiting: asyncio.Future[bytes] | None = None
        self._lost: BaseException | None = None

    @classmethod
    async def open(cls, port: int) -> Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(cls, "127.0.0.1", port)
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0 or self._waiting is None:
            return
        length = _content_length(self._buffer[:end])
        if len(self._buffer) < end + 4 + length:
            return
        answer = self._buffer[: end + 4 + length]
        self._buffer = self._buffer[end + 4 + length :]
        waiting, self._waiting = self._waiting, None
        waiting.set_result(answer)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._lost = exc or ConnectionError("the server closed the connection")
        if self._waiting is not None and not self._waiting.done():
            self._waiting.set_exception(self._lost)

    async def post(self, path: str, body: bytes) -> bytes:
        if self._lost is not None:
            raise self._lost
        assert self.transport is not None
        self._waiting = asyncio.get_running_loop().create_future()
        self.transport.write(
            b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (path.encode(), TOKEN.encode(), len(body), body)
        )
        answer = await self._waiting
        status = answer[9:12]
        if status not in (b"200", b"201"):
            raise RuntimeError(f"the server answered {answer[:300]!r}")
        return answer[answer.find(b"\r\n\r\n") + 4 :]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Server:
    """``kanthorq serve`` on ``dsn``, in a process of its own."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.port = _free_port()
        self.proc: asyncio.subprocess.Process | None = None

    def cpu_seconds(self) -> float:
        """The server's CPU time so far (0 where /proc is not)."""
        assert self.proc is not None
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def __aenter__(self) -> Server:
        env = {**os.environ, "KANTHORQ_HTTP_TOKEN": TOKEN}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "kanthorq", "serve", "--dsn", self.dsn, "--port", str(self.port)),
            *("--log-level", "WARNING", "--max-body-size", str(16 * 1024 * 1024)),
            env=env,
            cwd=ROOT,
        )
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.proc.returncode is not None:
                raise RuntimeError(f"kanthorq serve exited with {self.proc.returncode}")
            try:
                conn = await Connection.open(self.port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        conn.close()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def _content_length(head: bytes) -> int:
    at = head.lower().find(b"content-length:")
    if at < 0:
        return 0
    end = head.find(b"\r\n", at)
    return int(head[at + 15 : end if end >= 0 else len(head)])


def _one(i: int) -> bytes:
    return msgspec.json.encode({"subject": SUBJECT, "body": payload(i)})


async def _single(port: int, cfg: Config) -> dict[str, Any]:
    path = f"/v1/streams/{STREAM}/events"
    conns = [await Connection.open(port) for _ in range(cfg.publishers)]
    try:
        for _ in range(2):  # warm up, as W5: every connection open, the pool grown
            await asyncio.gather(*(c.post(path, _one(i)) for i, c in enumerate(conns)))

        async def loop(conn: Connection, ident: int, until: float) -> int:
            sent = 0
            while time.perf_counter() < until:
                await conn.post(path, _one(ident * 1_000_000 + sent))
                sent += 1
            return sent

        start = time.perf_counter()
        until = start + cfg.publish_seconds
        sent = await asyncio.gather(*(loop(c, i, until) for i, c in enumerate(conns)))
        seconds = time.perf_counter() - start
    finally:
        for conn in conns:
            conn.close()
    total = sum(sent)
    return {"events": total, "seconds": seconds, "events_per_s": total / seconds}


async def _batches(port: int, cfg: Config) -> dict[str, Any]:
    path = f"/v1/streams/{STREAM}/events:batch"
    bodies = [
        msgspec.json.encode([{"subject": SUBJECT, "body": body} for body in batch])
        for batch in batches(cfg.events, cfg.batch)
    ]
    conn = await Connection.open(port)
    try:
        await conn.post(path, bodies[0])  # warm up: the pool's connection, the statements
        start = time.perf_counter()
        for body in bodies:
            await conn.post(path, body)
        seconds = time.perf_counter() - start
    finally:
        conn.close()
    return {"events": cfg.events, "seconds": seconds, "events_per_s": cfg.events / seconds}


async def w8_http(variant: str, cfg: Config) -> dict[str, Any]:
    system = load("kanthorq")
    async with fresh_database(cfg.server_dsn, "w8_kanthorq") as dsn:
        await system.install(dsn)
        async with Server(dsn) as server:
            measure = _single if variant == VARIANTS[0] else _batches
            server_cpu, client_cpu = server.cpu_seconds(), time.process_time()
            result = await measure(server.port, cfg)
            server_cpu = server.cpu_seconds() - server_cpu
            client_cpu = time.process_time() - client_cpu
    per_event = 1e6 / result["events"]
    result["server_cpu_us_per_event"] = server_cpu * per_event
    result["client_cpu_us_per_event"] = client_cpu * per_event
    return result
