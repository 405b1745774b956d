"""Read-only inspection: streams, consumers, lag, tasks."""

from __future__ import annotations

from kanthorq.admin.base import AdminBase


class Inspection(AdminBase):
    """``show``, ``list_tasks`` and ``get_task``."""
