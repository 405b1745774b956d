"""Testing code built on kanthorq: your handlers, and your app end to end.

- :func:`message`: a :class:`kanthorq.Message` for calling a handler directly, with no
  database; it records ``ack``, ``nack``, ``cancel`` and ``extend``.
- :func:`drain`: run an app's workers until nothing is runnable now, and report what
  happened per consumer.
- A pytest plugin, opt-in (``kanthorq_testing = true``), whose ``kanthorq_dsn`` fixture is
  a fresh, migrated database per test (:mod:`kanthorq.testing.plugin`); the same databases
  without pytest in :mod:`kanthorq.testing.databases`.
"""

from kanthorq.testing.drain import ConsumerReport, NotDrained, TaskError, drain
from kanthorq.testing.messages import Call, RecordedMessage, message

__all__ = [
    "Call",
    "ConsumerReport",
    "NotDrained",
    "RecordedMessage",
    "TaskError",
    "drain",
    "message",
]
