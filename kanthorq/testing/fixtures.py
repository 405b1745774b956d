"""The fixtures of kanthorq's pytest plugin (see :mod:`kanthorq.testing.plugin`).

- ``kanthorq_dsn``: the DSN of a database of the test's own, migrated, dropped after it.
- ``kanthorq_server_dsn`` (session): the server: ``$KANTHORQ_TEST_DSN``, else the embedded
  server (``kanthorq[embedded]``) in a temporary folder.
- ``kanthorq_template`` (session): the migrated template database each test's is copied from.

They are plain (synchronous) fixtures, so they work with any async test plugin
(pytest-asyncio, anyio's): the database work runs on an event loop of its own in a
helper thread, never on the test's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from kanthorq.testing import databases

T = TypeVar("T")


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` to the end on a new event loop in another thread."""
    with ThreadPoolExecutor(1, thread_name_prefix="kanthorq-testing") as pool:
        return pool.submit(asyncio.run, work).result()


@pytest.fixture(scope="session")
def kanthorq_server_dsn(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``$KANTHORQ_TEST_DSN``, else an embedded server's DSN."""
    return databases.server_dsn(tmp_path_factory.mktemp("kanthorq_pg"))


@pytest.fixture(scope="session")
def kanthorq_template(kanthorq_server_dsn: str) -> Iterator[str]:
    """A migrated template database, built once per test run."""
    name = _run(databases.create_template(kanthorq_server_dsn))
    yield name
    _run(databases.drop_database(kanthorq_server_dsn, name))


@pytest.fixture
def kanthorq_dsn(kanthorq_server_dsn: str, kanthorq_template: str) -> Iterator[str]:
    """A fresh, migrated database for this test (its DSN), dropped afterwards."""
    dsn = _run(databases.copy_database(kanthorq_server_dsn, kanthorq_template))
    yield dsn
    _run(databases.drop_database(kanthorq_server_dsn, databases.database_of(dsn)))
