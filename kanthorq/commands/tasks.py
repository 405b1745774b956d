"""``kanthorq tasks list|show|cancel|resume|retry|rerun``."""

from __future__ import annotations

import argparse
from typing import Any

from kanthorq.commands import task_ops, task_view
from kanthorq.commands.common import FMT


def register(commands: Any, common: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "tasks",
        help="list, show, cancel, resume, retry or rerun tasks",
        description="List, show, cancel, resume, retry or rerun the tasks of a consumer.",
        formatter_class=FMT,
        parents=common,
    )
    parser.set_defaults(default_log_level="WARNING")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    task_view.register(actions, common)
    task_ops.register(actions, common)
