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

_Item = list[bytes] | OSError | None  # the lines of a read, its error, or the input's end
QUEUED_READS = 4  # reads that may wait for the reader (holds the thread back meanwhile)


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
    fd: int, reads: queue.Queue[_Item], loop: asyncio.AbstractEventLoop, ready: asyncio.Event
) -> None:
    """Put the non-empty lines of each read of ``fd`` in ``reads``, then None (or the read
    error); wake the loop for each."""
    splitter = _Splitter()
    end: OSError | None = None
    try:
        try:
            while chunk := os.read(fd, CHUNK):
                if lines := splitter.feed(chunk):
                    reads.put(lines)
                    loop.call_soon_threadsafe(ready.set)
            if lines := splitter.end():
                reads.put(lines)
        except OSError as exc:  # the reader must hear of it, not wait for lines forever
            end = exc
        reads.put(end)
        loop.call_soon_threadsafe(ready.set)
    except RuntimeError:  # the loop closed: nobody reads any more
        return


async def line_batches(fd: int, size: int) -> AsyncIterator[list[bytes]]:
    """Yield the non-empty lines read from the file descriptor ``fd`` in lists of up to
    ``size``, as they arrive: full lists from a file, and what has come so far from a pipe
    or a terminal.

    The reading thread fills a bounded queue, which holds it back while a batch is being
    published.
    """
    reads: queue.Queue[_Item] = queue.Queue(maxsize=QUEUED_READS)
    ready = asyncio.Event()
    args = (fd, reads, asyncio.get_running_loop(), ready)
    threading.Thread(target=_read_lines, args=args, name="kanthorq-stdin", daemon=True).start()
    pending: list[bytes] = []  # lines read, not yet yielded
    ended = False
    error: OSError | None = None  # raised once the lines read before it are yielded
    while True:
        while len(pending) < size and not ended and not reads.empty():
            item = reads.get_nowait()
            if isinstance(item, list):
                pending.extend(item)
            else:
                ended, error = True, item
        if pending:
            batch, pending = pending[:size], pending[size:]
            yield batch
        elif error is not None:
            raise error
        elif ended:
            return
        else:
            ready.clear()
            if reads.empty():
                await ready.wait()
