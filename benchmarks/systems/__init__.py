"""The systems under test. Peers are imported only when selected, so kanthorq and the raw
floor run without the ``bench`` extra."""

from __future__ import annotations

import importlib

from benchmarks.systems.base import System

MODULES = {
    "kanthorq": "benchmarks.systems.kanthorq_sys",
    "kanthorq+keys": "benchmarks.systems.kanthorq_keys_sys",
    "kanthorq+metrics": "benchmarks.systems.kanthorq_metrics",
    "kanthorq-x2": "benchmarks.systems.kanthorq_x2",
    "pgqueuer": "benchmarks.systems.pgqueuer_sys",
    "procrastinate": "benchmarks.systems.procrastinate_sys",
    "raw": "benchmarks.systems.raw",
}
ALL = tuple(MODULES)


def load(name: str) -> System:
    """The system called ``name`` (its module is imported now)."""
    module = importlib.import_module(MODULES[name])
    system: System = module.SYSTEM
    return system


__all__ = ["ALL", "MODULES", "System", "load"]
