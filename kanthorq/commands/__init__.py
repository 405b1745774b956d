"""The commands of the CLI but ``run``: migrate, pub, show, tasks, replay, prune, drop,
health, dashboard, serve and completion.

Each module registers its commands on the CLI's subparsers; :mod:`kanthorq.cli` calls
:func:`register`.
"""

from __future__ import annotations

import argparse
from typing import Any

from kanthorq.commands import (
    completion,
    dashboard,
    health,
    history,
    migrate,
    publish,
    serve,
    show,
    tasks,
)


def register(
    commands: Any, common: list[argparse.ArgumentParser], root: argparse.ArgumentParser
) -> None:
    """Add the commands to ``commands`` (the subparsers of ``root``, the CLI's parser)."""
    migrate.register(commands, common)
    publish.register(commands, common)
    show.register(commands, common)
    tasks.register(commands, common)
    history.register(commands, common)
    health.register(commands, common)
    dashboard.register(commands, common)
    serve.register(commands, common)
    completion.register(commands, root)
