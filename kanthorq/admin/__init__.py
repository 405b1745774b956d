"""Operating kanthorq: inspect streams and consumers, manage tasks, replay, retention.

Reach it as ``app.admin`` on an open app. Every operation that changes rows reports a
:class:`Changed`: what it updated, and what it left alone and why.
"""

from __future__ import annotations

from kanthorq.admin.activity import Activity, ActivityReader, StreamRate
from kanthorq.admin.base import ConsumerInfo, StreamInfo
from kanthorq.admin.filters import TaskFilter, parse_state, state_name
from kanthorq.admin.history import History
from kanthorq.admin.inspect import Inspection
from kanthorq.admin.results import Changed
from kanthorq.admin.retention import Retention
from kanthorq.admin.tasks import TaskOps


class Admin(Inspection, TaskOps, History, Retention, ActivityReader):
    """The operations of one app's database; ``app.admin``."""


__all__ = [
    "Activity",
    "Admin",
    "Changed",
    "ConsumerInfo",
    "StreamInfo",
    "StreamRate",
    "TaskFilter",
    "parse_state",
    "state_name",
]
