"""KanthorQ for Python: an asyncio event and task system on PostgreSQL."""

from kanthorq.app import App
from kanthorq.entities import Event, Task, TaskState
from kanthorq.errors import Discard, KanthorQError, PayloadTooLarge, Retry
from kanthorq.message import Message
from kanthorq.policies import Exponential, Fixed, Linear

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
    "Retry",
    "Task",
    "TaskState",
]
