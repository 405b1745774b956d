"""kanthorq publishing with a deduplication key on every event (``publish(key=)``,
``publish_many(keys=)``): what keys cost, beside plain ``kanthorq`` in the same run. Only
the publishing workloads."""

from __future__ import annotations

import itertools
import os
from typing import Any, ClassVar

import kanthorq
from benchmarks.payload import SUBJECT
from benchmarks.systems.base import Body, Publisher
from benchmarks.systems.kanthorq_sys import Kanthorq, KanthorqPublisher

_keys = itertools.count()


def _key() -> str:
    return f"bench-{os.getpid()}-{next(_keys)}"


class KeyedPublisher(KanthorqPublisher):
    def prepare(self, batch: list[Body]) -> Any:
        return [(SUBJECT, body) for body in batch], [_key() for _ in batch]

    async def many(self, prepared: Any) -> None:
        items, keys = prepared
        await self.app.publish_many(items, keys=keys)

    async def one(self, body: Body) -> None:
        await self.app.publish(SUBJECT, body, key=_key())


class KanthorqKeys(Kanthorq):
    name: ClassVar[str] = "kanthorq+keys"
    workloads: ClassVar[frozenset[str]] = frozenset({"W1", "W5"})

    async def open_publisher(self, dsn: str, connections: int) -> Publisher:
        app = kanthorq.App(dsn, pool_size=connections)
        await app.open()
        return KeyedPublisher(app)


SYSTEM = KanthorqKeys()
