"""Replay and retention: moving a consumer's cursor, deleting old rows, dropping."""

from __future__ import annotations

from kanthorq.admin.base import AdminBase


class History(AdminBase):
    """``replay``, ``delete_events``, ``prune_tasks``, ``drop_consumer``, ``drop_stream``."""
