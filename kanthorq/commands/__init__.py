"""The admin commands of the CLI: show, tasks, replay, prune, drop and health.

Each module registers its commands on the CLI's subparsers; :mod:`kanthorq.cli` calls
:func:`register`.
"""

from __future__ import annotations

import argparse
from typing import Any

from kanthorq.commands import health, history, show, tasks


def register(commands: Any, common: list[argparse.ArgumentParser]) -> None:
    """Add the admin commands to ``commands`` (the CLI's subparsers)."""
    show.register(commands, common)
    tasks.register(commands, common)
    history.register(commands, common)
    health.register(commands, common)
