"""``App.publish`` and ``App.publish_many``: the public face of publishing.

They check what they are given (before any SQL), turn ``delay``/``at`` into a time by the
database's clock, and hand the rest to :class:`kanthorq.publisher.Publisher`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Literal, overload

from kanthorq.clock import DbClock
from kanthorq.connections import AnyConn, driver_connection
from kanthorq.hooks import Hooks
from kanthorq.publisher import Item, Publisher
from kanthorq.schedule import schedule_ms


class Publishing:
    """What :class:`kanthorq.App` offers to publish."""

    stream: str
    hooks: Hooks
    _clock: DbClock

    def _require_publisher(self) -> Publisher:
        raise NotImplementedError

    @overload
    async def publish(
        self,
        subject: str,
        body: Any = ...,
        *,
        stream: str | None = ...,
        metadata: dict[str, Any] | None = ...,
        conn: AnyConn | None = ...,
        delay: float | None = ...,
        at: datetime | None = ...,
        key: str | None = ...,
        return_created: Literal[False] = ...,
    ) -> str: ...

    @overload
    async def publish(
        self,
        subject: str,
        body: Any = ...,
        *,
        stream: str | None = ...,
        metadata: dict[str, Any] | None = ...,
        conn: AnyConn | None = ...,
        delay: float | None = ...,
        at: datetime | None = ...,
        key: str | None = ...,
        return_created: Literal[True],
    ) -> tuple[str, bool]: ...

    async def publish(
        self,
        subject: str,
        body: Any = b"",
        *,
        stream: str | None = None,
        metadata: dict[str, Any] | None = None,
        conn: AnyConn | None = None,
        delay: float | None = None,
        at: datetime | None = None,
        key: str | None = None,
        return_created: bool = False,
    ) -> str | tuple[str, bool]:
        """Append one event; return its id. With ``conn=`` (an asyncpg connection, or a
        SQLAlchemy ``AsyncConnection``/``AsyncSession`` on asyncpg), it joins that transaction.

        ``delay`` (seconds) or ``at`` (an aware datetime): every consumer's task for the
        event becomes runnable then, not now. ``key``: publish it only if no event of the
        stream holds that key (see :mod:`kanthorq.dedup`); else write nothing and return
        the id of the event that holds it. ``return_created=True`` returns ``(id,
        created)`` instead, ``created`` False for a duplicate.
        """
        schedule = schedule_ms(delay, at, self._clock.now_ms())
        publisher = self.hooks.publisher(self._require_publisher())
        event_id, created = await publisher.publish(
            self.stream if stream is None else stream,
            subject,
            body,
            metadata,
            None if conn is None else await driver_connection(conn),
            schedule,
            key,
        )
        return (event_id, created) if return_created else event_id

    @overload
    async def publish_many(
        self,
        items: Iterable[Item],
        *,
        stream: str | None = ...,
        conn: AnyConn | None = ...,
        delay: float | None = ...,
        at: datetime | None = ...,
        keys: Sequence[str | None] | None = ...,
        return_created: Literal[False] = ...,
    ) -> list[str]: ...

    @overload
    async def publish_many(
        self,
        items: Iterable[Item],
        *,
        stream: str | None = ...,
        conn: AnyConn | None = ...,
        delay: float | None = ...,
        at: datetime | None = ...,
        keys: Sequence[str | None] | None = ...,
        return_created: Literal[True],
    ) -> list[tuple[str, bool]]: ...

    async def publish_many(
        self,
        items: Iterable[Item],
        *,
        stream: str | None = None,
        conn: AnyConn | None = None,
        delay: float | None = None,
        at: datetime | None = None,
        keys: Sequence[str | None] | None = None,
        return_created: bool = False,
    ) -> list[str] | list[tuple[str, bool]]:
        """Append many events, with one COPY; return their ids in order. ``delay`` and
        ``at`` schedule every one of them, as in :meth:`publish`. ``keys``: one key (or
        None) per item, each as ``key`` in :meth:`publish` (a duplicate, also of an
        earlier item of the batch, returns the id of the event holding its key; such a
        batch is written with one INSERT instead of a COPY)."""
        schedule = schedule_ms(delay, at, self._clock.now_ms())
        publisher = self.hooks.publisher(self._require_publisher())
        db = None if conn is None else await driver_connection(conn)
        ids, created = await publisher.publish_many(
            self.stream if stream is None else stream, items, db, schedule, keys
        )
        if not return_created:
            return ids
        return list(zip(ids, created or [True] * len(ids), strict=True))
