"""Task management: cancel, resume and retry, in bounded batches."""

from __future__ import annotations

from kanthorq.admin.base import AdminBase


class TaskOps(AdminBase):
    """``cancel``, ``resume`` and ``retry_now``."""
