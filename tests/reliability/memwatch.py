"""Memory evidence from inside a worker process, for the soak (opt-in).

The soak's worker app imports this module (copied next to it as ``rel_memwatch.py``) only
when ``KQ_TRACEMALLOC_DIR`` is set. ``start`` turns ``tracemalloc`` on and starts a thread
that, every few seconds, replaces ``<dir>/now.json`` with what the process knows about its
own memory, and at intervals dumps a ``tracemalloc`` snapshot (``snapshot-<n>.tracemalloc``)
with the object counts by type beside it (``snapshot-<n>.json``).

The numbers tell the layers apart: RSS (the kernel's view) against glibc's bytes in use and
free in its arenas (``mallinfo2``: fragmentation shows as free bytes that RSS still holds),
against Python's traced bytes (``tracemalloc``: what Python code allocated and still holds)
and tracemalloc's own overhead.
"""

from __future__ import annotations

import collections
import ctypes
import gc
import json
import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _mallinfo() -> dict[str, int]:
    """glibc's own accounting: bytes in use, free bytes kept in arenas, mmapped bytes."""
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return {}
    fn.restype = _MallInfo2
    info = fn()
    return {"malloc_inuse": info.uordblks, "malloc_free": info.fordblks, "mmap": info.hblkhd}


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def now() -> dict[str, Any]:
    current, peak = tracemalloc.get_traced_memory()
    return {
        "at": time.time(),
        "rss_kb": _rss_kb(),
        "traced": current,
        "traced_peak": peak,
        "tracemalloc_overhead": tracemalloc.get_tracemalloc_memory(),
        "pymalloc_blocks": sys.getallocatedblocks(),
        **_mallinfo(),
    }


def _write(path: Path, data: object) -> None:
    partial = path.with_suffix(".part")
    partial.write_text(json.dumps(data))
    os.replace(partial, path)


def _snapshot(folder: Path, index: int) -> None:
    snapshot = tracemalloc.take_snapshot()
    snapshot.dump(str(folder / f"snapshot-{index:04d}.tracemalloc"))
    types = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    _write(
        folder / f"snapshot-{index:04d}.json",
        {**now(), "objects": sum(types.values()), "types": dict(types.most_common(60))},
    )


def _run(folder: Path, first: float, every: float, sample: float) -> None:
    began = time.monotonic()
    due = began + first
    index = 0
    while True:
        _write(folder / "now.json", now())
        if time.monotonic() >= due:
            _snapshot(folder, index)
            index += 1
            due += every
        time.sleep(sample)


def start(folder: str, *, first: float = 60, every: float = 600, frames: int = 25) -> None:
    """Trace allocations from now on and record them in ``folder`` until the process ends."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    tracemalloc.start(frames)
    threading.Thread(
        target=_run, args=(path, first, every, 5.0), name="memwatch", daemon=True
    ).start()
