"""Limits across workers: how many tasks of a consumer run at once, and start per period,
counting every process and host.

The database enforces them in the claim (``kanthorq_claim_budget`` in migration 0003): the
claims of a limited consumer take their budget in turn, so no two processes can both see
the same free slot, and a crashed worker's share comes back when the rescue frees its
tasks (their deadline). They add no statement per task: the budget is read inside the
claim's own statement. A limited worker claims only through that statement (it does not
claim while converting).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kanthorq.errors import MAX_DELAY, ConfigError

MAX_LIMIT = 2**31 - 1  # an INT in the registry


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``count`` task starts every ``per`` seconds, across all workers of the
    consumer: in any window of ``per`` seconds, by the claims' times."""

    count: int
    per: float = 1.0

    def __post_init__(self) -> None:
        count, per = self.count, self.per
        if isinstance(count, bool) or not isinstance(count, int) or not 0 < count <= MAX_LIMIT:
            raise ConfigError(f"Rate(count) must be an int from 1 to {MAX_LIMIT}, got {count!r}")
        if (
            isinstance(per, bool)
            or not isinstance(per, int | float)
            or not (0.001 <= per <= MAX_DELAY and math.isfinite(per))
        ):
            raise ConfigError(
                f"Rate(per=) must be a number of seconds from 0.001 to {MAX_DELAY:g}, got {per!r}"
            )

    @property
    def period_ms(self) -> int:
        return round(self.per * 1000)


@dataclass(frozen=True, slots=True)
class Limits:
    """A consumer's limits across workers (None: no such limit)."""

    max_running: int | None = None
    rate: Rate | None = None

    @classmethod
    def build(cls, max_running: object, rate: object) -> Limits:
        if max_running is not None and (
            isinstance(max_running, bool)
            or not isinstance(max_running, int)
            or not 0 < max_running <= MAX_LIMIT
        ):
            raise ConfigError(
                f"max_running must be an int from 1 to {MAX_LIMIT}, got {max_running!r}"
            )
        if rate is not None and not isinstance(rate, Rate):
            raise ConfigError(f"rate must be a kanthorq.Rate(count, per=seconds), got {rate!r}")
        return cls(max_running, rate)

    @property
    def any(self) -> bool:
        return self.max_running is not None or self.rate is not None

    def claim_args(self) -> tuple[int, int, int]:
        """``(max_running, rate count, rate period ms)`` as the claim takes them (0: none)."""
        rate = self.rate
        return (
            self.max_running or 0,
            0 if rate is None else rate.count,
            0 if rate is None else rate.period_ms,
        )


NO_LIMITS = Limits()
