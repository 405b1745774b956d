"""KanthorQ for Python: an asyncio event and task system on PostgreSQL."""

import logging

from kanthorq.app import App
from kanthorq.entities import Event, Task, TaskState
from kanthorq.errors import Discard, KanthorQError, PayloadTooLarge, PublishError, Retry
from kanthorq.limits import Rate
from kanthorq.message import Message
from kanthorq.policies import Exponential, Fixed, Linear

# the library never configures logging; only the CLI installs handlers
logging.getLogger("kanthorq").addHandler(logging.NullHandler())

__all__ = [
    "App",
    "Discard",
    "Event",
    "Exponential",
    "Fixed",
    "KanthorQError",
    "Linear",
    "Message",
    "PayloadTooLarge",
    "PublishError",
    "Rate",
    "Retry",
    "Task",
    "TaskState",
]
