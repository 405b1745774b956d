"""Every error kanthorq raises derives from :class:`KanthorQError`.

The docstring of each class is its default message.
"""

from __future__ import annotations

import math

# The longest delay (seconds) a retry may ask for: its milliseconds still fit a BIGINT.
MAX_DELAY = 1e12


class KanthorQError(Exception):
    """kanthorq failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class InvalidSubject(KanthorQError, ValueError):
    """The subject or subject filter is not valid."""


class InvalidName(KanthorQError, ValueError):
    """The stream or consumer name is not valid."""


class InvalidPayload(KanthorQError, ValueError):
    """The event body or metadata cannot be stored."""


class PayloadTooLarge(InvalidPayload):
    """The event body is larger than the configured maximum."""


class ConfigError(KanthorQError, ValueError):
    """The configuration is not valid."""


class ConnectionFailed(KanthorQError):
    """Could not connect to PostgreSQL."""


class EmbeddedUnavailable(KanthorQError):
    """No DSN was given and the embedded PostgreSQL server is not installed."""


class ConsumerConflict(KanthorQError):
    """A consumer with this name already exists on another stream."""


class SchemaNotReady(KanthorQError):
    """The database lacks kanthorq's schema: run `kanthorq migrate up`, or App(migrate=True)."""


class StreamNotReady(KanthorQError):
    """The stream's table lacks what this needs, and it cannot be added from inside the
    caller's transaction."""


class UnknownStream(KanthorQError, LookupError):
    """No stream has this name."""


class UnknownConsumer(KanthorQError, LookupError):
    """No consumer has this name."""


class UnknownTask(KanthorQError, LookupError):
    """The consumer has no task for this event."""


class UnknownEvent(KanthorQError, LookupError):
    """The stream has no event with this id."""


class VisibilityTimeout(KanthorQError):
    """The task ran longer than its visibility timeout."""


class StaleTask(KanthorQError):
    """The task is no longer running with this attempt: a settle in the caller's transaction
    changed nothing, so that transaction should roll back."""


class NotOpen(KanthorQError):
    """The app is not open: use `async with app:` or `await app.run()` first."""


class Retry(KanthorQError):
    """The handler asked for the task to be retried later."""

    def __init__(self, delay: float | None = None, reason: str | None = None) -> None:
        if delay is not None and (
            isinstance(delay, bool)
            or not isinstance(delay, int | float)
            or not (0 <= delay <= MAX_DELAY and math.isfinite(delay))
        ):
            raise ConfigError(
                f"Retry(delay=...) must be a number of seconds from 0 to {MAX_DELAY:g}, "
                f"got {delay!r}"
            )
        self.delay = delay
        self.reason = reason
        super().__init__(reason or "retry requested by the handler")


class Discard(KanthorQError):
    """The handler asked for the task to be discarded."""

    def __init__(self, reason: str | None = None) -> None:
        self.reason = reason
        super().__init__(reason or "discarded by the handler")


class UndecodableBody(Discard, ValueError):
    """The event's body cannot be decoded into the handler's type: it never will, so the task
    is discarded at once (without using up its retries), and ``on_discard`` receives this.
    The decoder's own error is the ``__cause__``."""


class PublishError(KanthorQError):
    """The event could not be published.

    ``may_be_written``: False when it surely was not written (publishing it again makes
    no duplicate); True when the connection failed while it was being written, so its
    commit may have happened (look for its id first, or accept a duplicate). The driver's
    exception is the ``__cause__``."""

    may_be_written: bool = True


class NotPublished(PublishError):
    """The event was not written."""

    may_be_written = False


class PublishOutcomeUnknown(PublishError):
    """The connection failed while the event was being written: it may have been written."""

    may_be_written = True


class MissingExtra(KanthorQError, ImportError):
    """An optional feature needs a package that is not installed."""
