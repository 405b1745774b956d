"""Lifecycle hooks: what the publisher and the workers tell the features that live beside them.

Metrics (:mod:`kanthorq.metrics`), traces (:mod:`kanthorq.tracing`) and health
(:mod:`kanthorq.health`) each implement :class:`Hook` and are added to an app with
``app.hooks.add(hook)``; the core knows nothing about them. The events, in the order a
task meets them:

- ``publishing`` (around one publish call) and ``published``: the publishing side.
- ``stepped``: a consumer's worker loop finished a step (its poll, conversion and claims).
- ``claimed``: a claim returned tasks.
- ``started`` and ``finished``: in the handler's own asyncio task, around one attempt.
- ``settled``: the attempt's outcome was written: ``completed`` (when the batched
  completion is confirmed), ``retried``, ``discarded`` or ``cancelled``.
- ``rescued``: tasks past their visibility timeout were made retryable (or discarded).
- ``handed_back``: a shutdown gave running tasks back for another attempt at once.
- ``db_error``: a database operation failed (the worker retries it).

Hooks are called in the worker's event loop, so each must be quick and must not block.
Whatever a hook raises is logged (once per hook and event) and swallowed: a hook never
breaks a worker or a publish. Only the methods a hook overrides are called, and an app
with no hooks does no per-task work at all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar

import msgspec

from kanthorq.entities import Event
from kanthorq.errors import PublishError
from kanthorq.message import Message
from kanthorq.subscription import Subscription

if TYPE_CHECKING:
    from kanthorq.publisher import Publisher

logger = logging.getLogger(__name__)

Settlement: TypeAlias = Literal["completed", "retried", "discarded", "cancelled"]
Headers: TypeAlias = Mapping[str, str]
Work: TypeAlias = Coroutine[Any, Any, None]
H = TypeVar("H", bound="Hook")

EVENTS = (
    "publishing",
    "published",
    "stepped",
    "polled",
    "claimed",
    "started",
    "finished",
    "settled",
    "rescued",
    "handed_back",
    "db_error",
)


class Hook:
    """A subscriber to kanthorq's lifecycle events. Override the methods you need; the
    others do nothing (and are never called)."""

    def publishing(self, stream: str, count: int) -> AbstractContextManager[Headers] | None:
        """Around one publish of ``count`` events to ``stream``: the context manager is
        entered before they are written and sees any exception. The mapping it yields is
        added to every event's metadata (a key the caller set is kept)."""
        return None

    def published(self, stream: str, event_ids: Sequence[str]) -> None:
        """Events were written (inside ``publishing``'s context)."""

    def stepped(self, consumer: Subscription) -> None:
        """The consumer's worker loop finished a step: it is alive and not stuck."""

    def polled(self, consumer: Subscription) -> None:
        """The process's poll asked for the consumer (every poll interval, idle or not)."""

    def claimed(self, consumer: Subscription, count: int) -> None:
        """A claim (or a conversion) handed ``count`` tasks to this worker."""

    def started(self, consumer: Subscription, msg: Message) -> None:
        """In the handler's task, just before the handler runs; a context variable set here
        is what the handler sees."""

    def finished(
        self, consumer: Subscription, msg: Message, seconds: float, error: BaseException | None
    ) -> None:
        """In the handler's task, when the attempt is over (``seconds`` after it started).
        ``error``: what escaped it, ``CancelledError`` when a shutdown interrupted it."""

    def settled(
        self,
        consumer: Subscription,
        msg: Message,
        outcome: Settlement,
        error: BaseException | None,
    ) -> None:
        """The attempt's outcome was written. ``completed`` comes when the batched
        completion is confirmed (outside the handler's task), the others during the
        attempt; ``error`` is the handler's exception for ``retried`` and ``discarded``."""

    def rescued(self, consumer: Subscription, retried: int, discarded: int) -> None:
        """Running tasks past their visibility timeout were made retryable (``retried``) or,
        their attempts used up, discarded."""

    def handed_back(self, consumer: Subscription, count: int) -> None:
        """A shutdown gave ``count`` running tasks back, runnable again at once."""

    def db_error(self, operation: str, error: BaseException) -> None:
        """A database operation (``convert``, ``claim``, ``complete``, ``publish``, ...)
        failed; the worker retries it."""


def failed_operation(exc: BaseException, default: str = "worker") -> str:
    """The database operation that raised ``exc``: the :mod:`kanthorq.store` method its
    traceback went through last (``convert``, ``claim``, ``rescue``, ...), else ``default``."""
    operation = default
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename.endswith(_STORE_FILE):
            operation = code.co_name.lstrip("_")
        tb = tb.tb_next
    return operation


_STORE_FILE = os.path.join("kanthorq", "store.py")


def _overrides(hook: Hook, name: str) -> bool:
    return getattr(type(hook), name) is not getattr(Hook, name)


class Hooks:
    """The hooks of an app (``app.hooks``): every event is passed to each hook that
    overrides it, in the order they were added."""

    def __init__(self) -> None:
        self._hooks: tuple[Hook, ...] = ()
        self._calls: dict[str, tuple[tuple[Hook, Callable[..., Any]], ...]] = {}
        self._failed: set[tuple[int, str]] = set()
        self._index()

    def __bool__(self) -> bool:
        return bool(self._hooks)

    def __iter__(self) -> Iterator[Hook]:
        return iter(self._hooks)

    def add(self, hook: H) -> H:
        """Add ``hook`` (once); it takes effect at once, in running workers too."""
        if not isinstance(hook, Hook):
            raise TypeError(f"a hook must be a kanthorq.hooks.Hook, got {type(hook).__name__}")
        if hook not in self._hooks:
            self._hooks += (hook,)
            self._index()
        return hook

    def remove(self, hook: Hook) -> None:
        self._hooks = tuple(h for h in self._hooks if h is not hook)
        self._index()

    def _index(self) -> None:
        self._calls = {
            name: tuple((h, getattr(h, name)) for h in self._hooks if _overrides(h, name))
            for name in EVENTS
        }
        self.lifecycle = bool(self._calls["started"] or self._calls["finished"])
        self.settling = bool(self._calls["settled"])
        self.publishing_hooks = bool(self._calls["publishing"] or self._calls["published"])

    def _call(self, name: str, *args: Any) -> None:
        for hook, method in self._calls[name]:
            try:
                method(*args)
            except Exception:
                self._report(hook, name)

    def _report(self, hook: Hook, name: str) -> None:
        key = (id(hook), name)
        if key in self._failed:
            logger.debug("hook %r failed in %s again", hook, name, exc_info=True)
            return
        self._failed.add(key)
        logger.exception(
            "hook %r failed in %s (ignored; later failures of it are logged at DEBUG)",
            hook,
            name,
        )

    # ---- the worker -----------------------------------------------------------------

    def stepped(self, consumer: Subscription) -> None:
        self._call("stepped", consumer)

    def polled(self, consumer: Subscription) -> None:
        self._call("polled", consumer)

    def claimed(self, consumer: Subscription, count: int) -> None:
        if count:
            self._call("claimed", consumer, count)

    def attempt(self, consumer: Subscription, msg: Message, work: Work) -> Work:
        """``work`` (one handler's attempt) between ``started`` and ``finished``; ``work``
        itself when no hook listens to them."""
        return self._attempt(consumer, msg, work) if self.lifecycle else work

    async def _attempt(self, consumer: Subscription, msg: Message, work: Work) -> None:
        self._call("started", consumer, msg)
        began = time.perf_counter()
        error: BaseException | None = None
        try:
            await work
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._call("finished", consumer, msg, time.perf_counter() - began, error)

    def settled(
        self,
        consumer: Subscription,
        msg: Message,
        outcome: Settlement,
        error: BaseException | None = None,
    ) -> None:
        self._call("settled", consumer, msg, outcome, error)

    def rescued(self, consumer: Subscription, retried: int, discarded: int) -> None:
        if retried or discarded:
            self._call("rescued", consumer, retried, discarded)

    def handed_back(self, consumer: Subscription, count: int) -> None:
        if count:
            self._call("handed_back", consumer, count)

    def db_error(self, operation: str, error: BaseException) -> None:
        self._call("db_error", operation, error)

    # ---- publishing -----------------------------------------------------------------

    def publisher(self, publisher: Publisher) -> Publisher | HookedPublisher:
        """The publisher ``App.publish`` uses: ``publisher`` itself when no hook listens to
        publishing, else one that calls the hooks around it."""
        return HookedPublisher(publisher, self) if self.publishing_hooks else publisher

    @contextlib.contextmanager
    def publishing(self, stream: str, count: int) -> Iterator[dict[str, str]]:
        """Every hook's ``publishing`` context, entered in order; the headers they yield."""
        headers: dict[str, str] = {}
        with contextlib.ExitStack() as stack:
            for hook, method in self._calls["publishing"]:
                try:
                    context = method(stream, count)
                    if context is not None:
                        headers.update(stack.enter_context(_Guarded(context, self, hook)))
                except Exception:
                    self._report(hook, "publishing")
            yield headers

    def published(self, stream: str, event_ids: Sequence[str]) -> None:
        self._call("published", stream, event_ids)


class _Guarded(AbstractContextManager[Headers]):
    """A hook's context manager whose own failures are reported, not raised."""

    def __init__(self, inner: AbstractContextManager[Headers], hooks: Hooks, hook: Hook) -> None:
        self._inner = inner
        self._hooks = hooks
        self._hook = hook

    def __enter__(self) -> Headers:
        return self._inner.__enter__()

    def __exit__(self, *exc_info: Any) -> None:
        try:
            self._inner.__exit__(*exc_info)
        except Exception as exc:
            if exc is not exc_info[1]:
                self._hooks._report(self._hook, "publishing")
        # returns None: the publish's own exception always passes on


def with_headers(metadata: Any, headers: Headers) -> Any:
    """``metadata`` with ``headers`` added (the caller's keys win). Anything that is not a
    dict is left for the publisher to refuse."""
    if not headers:
        return metadata
    if metadata is None:
        return dict(headers)
    if isinstance(metadata, dict):
        return {**headers, **metadata}
    return metadata


def _item_with_headers(item: Any, headers: Headers) -> Any:
    if type(item) is tuple and len(item) == 2:
        return (item[0], item[1], dict(headers))
    if type(item) is tuple and len(item) == 3:
        return (item[0], item[1], with_headers(item[2], headers))
    if isinstance(item, Event) and isinstance(item.metadata, dict):
        return msgspec.structs.replace(item, metadata=with_headers(item.metadata, headers))
    return item  # the publisher refuses it with its own message


class HookedPublisher:
    """A :class:`~kanthorq.publisher.Publisher` seen through the hooks: ``publishing``
    around each call, its headers added to the metadata before the publisher sees it."""

    def __init__(self, inner: Publisher, hooks: Hooks) -> None:
        self._inner = inner
        self._hooks = hooks

    @contextlib.asynccontextmanager
    async def _publishing(self, stream: str, count: int) -> AsyncIterator[dict[str, str]]:
        with self._hooks.publishing(stream, count) as headers:
            try:
                yield headers
            except PublishError as exc:
                self._hooks.db_error("publish", exc)
                raise

    async def publish(
        self, stream: str, subject: str, body: object, metadata: Any, *rest: Any, **kw: Any
    ) -> tuple[str, bool]:
        async with self._publishing(stream, 1) as headers:
            metadata = with_headers(metadata, headers)
            event_id, created = await self._inner.publish(
                stream, subject, body, metadata, *rest, **kw
            )
            if created:  # a duplicate key wrote nothing
                self._hooks.published(stream, [event_id])
        return event_id, created

    async def publish_many(
        self, stream: str, items: Iterable[Any], *rest: Any, **kw: Any
    ) -> tuple[list[str], list[bool] | None]:
        batch = items if isinstance(items, list | tuple) else list(items)
        async with self._publishing(stream, len(batch)) as headers:
            if headers:
                batch = [_item_with_headers(item, headers) for item in batch]
            ids, created = await self._inner.publish_many(stream, batch, *rest, **kw)
            written = (
                ids if created is None else [i for i, c in zip(ids, created, strict=True) if c]
            )
            self._hooks.published(stream, written)
        return ids, created
