"""Round trips, counted in the benchmark's own processes by wrapping asyncpg's methods.

Each call of ``Connection._do_execute`` (a statement with arguments, or a fetch) is one
round trip, plus one to prepare it when asyncpg's statement cache misses; a plain
``execute`` without arguments is one; a ``COPY`` is one (its rows stream in between).
Statements are keyed by their first line (kanthorq's statement files open with a comment
that says what they do), and each key also sums the seconds its calls took, waited on from
this process (the round trip and the server's work).
"""

from __future__ import annotations

import functools
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from asyncpg.connection import Connection

counts: Counter[str] = Counter()
prepares: Counter[str] = Counter()
seconds: defaultdict[str, float] = defaultdict(float)


def key(query: str) -> str:
    for line in query.splitlines():
        text = line.strip()
        if text:
            return text[:90]
    return "?"


async def _timed(name: str, call: Any) -> Any:
    counts[name] += 1
    start = time.perf_counter()
    try:
        return await call
    finally:
        seconds[name] += time.perf_counter() - start


def _patch(name: str, wrapper: Any) -> None:
    setattr(Connection, name, wrapper)


def _wrap(name: str, describe: Callable[[tuple[Any, ...], dict[str, Any]], str]) -> None:
    original = getattr(Connection, name)

    @functools.wraps(original)
    async def counted(self: Connection, *args: Any, **kwargs: Any) -> Any:
        return await _timed(describe(args, kwargs), original(self, *args, **kwargs))

    _patch(name, counted)


def _cached(conn: Any, query: str, kwargs: dict[str, Any]) -> bool:
    """Whether asyncpg's statement cache holds ``query`` (its key as ``_get_statement``'s)."""
    if not kwargs.get("use_cache", True):
        return False
    record_class = kwargs.get("record_class") or conn._protocol.get_record_class()
    cache_key = (query, record_class, kwargs.get("ignore_custom_codec", False))
    return conn._stmt_cache.get(cache_key) is not None


def _wrap_prepare() -> None:
    name = "_get_statement"
    original = getattr(Connection, name)

    @functools.wraps(original)
    async def counted(self: Connection, query: str, *args: Any, **kwargs: Any) -> Any:
        if not _cached(self, query, kwargs):
            prepares[key(query)] += 1
        return await original(self, query, *args, **kwargs)

    _patch(name, counted)


def install() -> None:
    """Count every statement of every asyncpg connection of this process from now on."""
    _wrap("_do_execute", lambda a, k: key(a[0]))
    _wrap("copy_records_to_table", lambda a, k: "COPY INTO " + str(a[0]))
    original = Connection.execute

    @functools.wraps(original)
    async def execute(self: Connection, query: str, *args: Any, **kwargs: Any) -> Any:
        if args:  # with args, execute goes through _do_execute, counted there
            return await original(self, query, *args, **kwargs)
        return await _timed(key(query), original(self, query, *args, **kwargs))

    _patch("execute", execute)
    _wrap_prepare()


def snapshot() -> dict[str, Any]:
    return {
        "statements": dict(counts),
        "prepares": dict(prepares),
        "statement_seconds": {k: round(v, 4) for k, v in seconds.items()},
    }
