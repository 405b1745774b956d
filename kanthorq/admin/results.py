"""What an admin operation reports: what changed, and what was left alone and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Changed:
    """``updated``: rows changed; ``verb`` says how (``"updated"``, or ``"deleted"`` for
    retention and drops), in its text and as the count's key in ``as_dict()``. ``skipped``:
    rows left alone, counted per reason (``"wrong state"``, ``"not found"``, ...).
    ``details``: what else the operation reports (a cursor's old and new position, the
    tables dropped, the event ids not found)."""

    updated: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # what else the operation tells
    verb: str = "updated"

    @property
    def deleted(self) -> int:
        """The rows deleted, for an operation that deletes (``updated`` by its other name)."""
        return self.updated if self.verb == "deleted" else 0

    def skip(self, reason: str, count: int = 1) -> None:
        if count:
            self.skipped[reason] = self.skipped.get(reason, 0) + count

    def add(self, other: Changed) -> None:
        self.updated += other.updated
        for reason, count in other.skipped.items():
            self.skip(reason, count)

    def as_dict(self) -> dict[str, Any]:
        found = {self.verb: self.updated, "skipped": dict(self.skipped)}
        return found | ({"details": dict(self.details)} if self.details else {})

    def __str__(self) -> str:
        left = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
        return f"{self.updated} {self.verb}" + (f"; left alone: {left}" if left else "")
