"""Load the named ``.sql`` files that ship with the package.

In a wheel they live in ``kanthorq/_sql``; in a source checkout (or an editable install) they
are read from the top-level ``sql/`` folder. Table names enter a statement only through
:func:`render`, which takes ids that :func:`kanthorq.ids.table_name` has checked and quotes
them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

from kanthorq.ids import table_name

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_MIGRATION = re.compile(r"(\d{4})_(\w+)\.(up|down)\.sql")
MAX_IDENTIFIER = 63


def _root() -> Traversable:
    packaged = resources.files("kanthorq") / "_sql"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "sql"


@cache
def load(name: str) -> str:
    """The text of ``sql/queries/<name>.sql``."""
    return (_root() / "queries" / f"{name}.sql").read_text(encoding="utf-8")


def quote_ident(name: str) -> str:
    if len(name.encode()) > MAX_IDENTIFIER:
        raise ValueError(f"identifier longer than {MAX_IDENTIFIER} bytes: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def stream_names(stream_id: str) -> dict[str, str]:
    table = table_name(stream_id)
    return {
        "stream": quote_ident(table),
        "stream_txid_idx": quote_ident(f"{table}_txid"),
        "stream_dedup_idx": quote_ident(f"{table}_dedup"),
    }


def task_names(consumer_id: str) -> dict[str, str]:
    table = table_name(consumer_id)
    return {
        "tasks": quote_ident(table),
        "tasks_state_idx": quote_ident(f"{table}_state"),
        "tasks_ready_idx": quote_ident(f"{table}_ready"),
        "tasks_running_idx": quote_ident(f"{table}_running"),
        "tasks_attempted_idx": quote_ident(f"{table}_attempted"),
    }


@cache
def render(name: str, stream_id: str = "", consumer_id: str = "") -> str:
    """The statement ``name`` with its ``{{placeholders}}`` filled with quoted table names."""
    names: dict[str, str] = {}
    if stream_id:
        names |= stream_names(stream_id)
    if consumer_id:
        names |= task_names(consumer_id)

    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in names:
            raise KeyError(f"{name}.sql needs {{{{{key}}}}}, which was not given")
        return names[key]

    return _PLACEHOLDER.sub(fill, load(name))


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    up: str
    down: str


@cache
def migrations() -> tuple[Migration, ...]:
    """Every migration in ``sql/migrations``, in version order; each has an up and a down."""
    folder = _root() / "migrations"
    found: dict[tuple[int, str], dict[str, str]] = {}
    for entry in folder.iterdir():
        match = _MIGRATION.fullmatch(entry.name)
        if match:
            key = (int(match.group(1)), match.group(2))
            found.setdefault(key, {})[match.group(3)] = entry.read_text(encoding="utf-8")
    result = []
    for (version, name), texts in sorted(found.items()):
        if set(texts) != {"up", "down"}:
            raise RuntimeError(f"migration {version:04d}_{name} lacks its up or down file")
        result.append(Migration(version, name, texts["up"], texts["down"]))
    return tuple(result)
