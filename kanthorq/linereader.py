"""Lines of a blocking binary stream (stdin), in batches, without blocking the event loop."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator
from typing import BinaryIO


def _read_lines(
    source: BinaryIO,
    lines: queue.Queue[bytes | OSError | None],
    loop: asyncio.AbstractEventLoop,
    ready: asyncio.Event,
) -> None:
    """Put the non-empty lines of ``source`` in ``lines``, then None (or the read error);
    wake the loop for each."""
    end: OSError | None = None
    try:
        try:
            for raw in source:
                line = raw.removesuffix(b"\n").removesuffix(b"\r")
                if line:
                    lines.put(line)
                    loop.call_soon_threadsafe(ready.set)
        except OSError as exc:  # the reader must hear of it, not wait for lines forever
            end = exc
        lines.put(end)
        loop.call_soon_threadsafe(ready.set)
    except RuntimeError:  # the loop closed: nobody reads any more
        return


async def line_batches(source: BinaryIO, size: int) -> AsyncIterator[list[bytes]]:
    """Yield the non-empty lines of ``source`` in lists of up to ``size``, as they arrive.

    A daemon thread reads (stdin blocks) into a bounded queue, which holds it back while a
    batch is being published.
    """
    lines: queue.Queue[bytes | OSError | None] = queue.Queue(maxsize=size * 4)
    ready = asyncio.Event()
    args = (source, lines, asyncio.get_running_loop(), ready)
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
