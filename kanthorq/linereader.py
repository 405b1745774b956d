"""Lines of a blocking file descriptor (stdin), in batches, without blocking the event loop.

A thread reads the descriptor with ``os.read``, never through a buffered file object
(``sys.stdin.buffer``). A read of a pipe or a terminal can block forever, so the thread is a
daemon that nobody joins. A daemon thread blocked inside a *buffered* read holds that
object's lock, and when the interpreter shuts down it closes ``sys.stdin``, waits a second
for the lock and aborts (``Fatal Python error: _enter_buffered_busy``). ``os.read`` holds no
lock that shutdown needs, and it reads a pipe, a terminal and a regular file alike.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import AsyncIterator

CHUNK = 64 * 1024

_Item = bytes | OSError | None  # a line, the read error, or the end of the input


class _Splitter:
    """Cuts chunks into non-empty lines, their line endings removed."""

    def __init__(self) -> None:
        self.rest: list[bytes] = []  # the unended line's pieces (joined once: a long line
        # read in many chunks is not copied again with each)

    def feed(self, chunk: bytes) -> list[bytes]:
        if b"\n" not in chunk:
            self.rest.append(chunk)
            return []
        *lines, last = b"".join([*self.rest, chunk]).split(b"\n")
        self.rest = [last]
        return [line for line in map(_strip, lines) if line]

    def end(self) -> list[bytes]:
        last, self.rest = _strip(b"".join(self.rest)), []
        return [last] if last else []


def _strip(line: bytes) -> bytes:
    return line.removesuffix(b"\r")


def _read_lines(
    fd: int, lines: queue.Queue[_Item], loop: asyncio.AbstractEventLoop, ready: asyncio.Event
) -> None:
    """Put the non-empty lines of ``fd`` in ``lines``, then None (or the read error); wake
    the loop for each."""
    splitter = _Splitter()
    end: OSError | None = None
    try:
        try:
            while chunk := os.read(fd, CHUNK):
                for line in splitter.feed(chunk):
                    lines.put(line)
                    loop.call_soon_threadsafe(ready.set)
            for line in splitter.end():
                lines.put(line)
        except OSError as exc:  # the reader must hear of it, not wait for lines forever
            end = exc
        lines.put(end)
        loop.call_soon_threadsafe(ready.set)
    except RuntimeError:  # the loop closed: nobody reads any more
        return


async def line_batches(fd: int, size: int) -> AsyncIterator[list[bytes]]:
    """Yield the non-empty lines read from the file descriptor ``fd`` in lists of up to
    ``size``, as they arrive.

    The reading thread fills a bounded queue, which holds it back while a batch is being
    published.
    """
    lines: queue.Queue[_Item] = queue.Queue(maxsize=size * 4)
    ready = asyncio.Event()
    args = (fd, lines, asyncio.get_running_loop(), ready)
    threading.Thread(target=_read_lines, args=args, name="kanthorq-stdin", daemon=True).start()
    while True:
        batch: list[bytes] = []
        while len(batch) < size and not lines.empty():
            line = lines.get_nowait()
            if isinstance(line, OSError):
                raise line
            if line is None:
                if batch:
                    yield batch
                return
            batch.append(line)
        if batch:
            yield batch
        else:
            ready.clear()
            if lines.empty():
                await ready.wait()
