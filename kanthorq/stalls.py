"""Conversion held back by an open transaction, said once in the log.

Conversion never passes a transaction that may still commit events (DESIGN.md, rule 1), so
a transaction left open anywhere in the database (an idle session in a transaction, a long
report) holds every new event back. That is documented, but silent: when it lasts longer
than a few poll intervals, the worker logs it once, naming the backend that holds it, and
logs again when it is over.
"""

from __future__ import annotations

import logging
import time

import asyncpg

from kanthorq.sqlfiles import load

logger = logging.getLogger(__name__)


class StallWatch:
    def __init__(self, consumer: str, after: float) -> None:
        self._consumer = consumer
        self._after = after  # seconds of waiting before it is logged
        self._since: float | None = None
        self._logged = False

    async def update(self, waiting: bool, db: asyncpg.Pool) -> None:
        """``waiting``: the last conversion found committed events behind an open
        transaction."""
        now = time.monotonic()
        if not waiting:
            if self._logged:
                logger.info(
                    "consumer %s: conversion is no longer held back (after %.0fs)",
                    self._consumer,
                    now - (self._since or now),
                    extra={"consumer": self._consumer},
                )
            self._since, self._logged = None, False
            return
        if self._since is None:
            self._since = now
        if self._logged or now - self._since < self._after:
            return
        self._logged = True
        row = await db.fetchrow(load("horizon_blocker"))
        self._log(row, now - self._since)

    def _log(self, row: asyncpg.Record | None, waited: float) -> None:
        if row is None:
            blocker = "a transaction that this role cannot see"
            extra: dict[str, object] = {}
        else:
            age = row["age_s"]
            blocker = (
                f"backend pid {row['pid']} (user {row['usename']!r}, application "
                f"{row['application_name']!r}, {row['state']}, its transaction open for "
                f"{'?' if age is None else f'{age:.0f}s'}; query: {row['query']!r})"
            )
            extra = {"blocking_pid": row["pid"], "blocking_age_s": age}
        logger.warning(
            "consumer %s: new events have waited %.0fs for an older transaction to finish: "
            "%s. Conversion never passes a transaction that may still commit events; "
            "commit or end it (or set idle_in_transaction_session_timeout)",
            self._consumer,
            waited,
            blocker,
            extra={"consumer": self._consumer, **extra},
        )
