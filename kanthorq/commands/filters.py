"""The options that select a consumer's tasks, shared by ``tasks list`` and the task
operations: --consumer, --state, --subject, --older-than and --limit."""

from __future__ import annotations

import argparse

from kanthorq.admin.filters import STATE_NAMES, TaskFilter
from kanthorq.commands import timeparse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_filter_options(
    parser: argparse.ArgumentParser,
    *,
    default_limit: int | None = 50,
    limit_help: str = "at most N tasks",
    with_limit: bool = True,
) -> None:
    """Add --consumer (required), --state (repeatable), --subject, --older-than and --limit.

    The values are checked by :func:`filter_from_args`, so a bad state or subject filter is a
    kanthorq usage error (exit code 2) with the same message as in the Python API.
    """
    group = parser.add_argument_group("which tasks")
    group.add_argument("--consumer", required=True, metavar="NAME", help="the consumer")
    group.add_argument(
        "--state",
        action="append",
        metavar="STATE",
        help="only tasks in this state, by name or code (repeat, or separate with commas): "
        + ", ".join(STATE_NAMES),
    )
    group.add_argument(
        "--subject", metavar="FILTER", help="only tasks whose subject matches, e.g. 'order.*'"
    )
    group.add_argument(
        "--older-than",
        type=timeparse.duration,
        metavar="DURATION",
        help="only tasks created at least this long ago: 90 (seconds), 90s, 15m, 2h, 3d",
    )
    if not with_limit:
        return
    default = "" if default_limit is None else " (default: %(default)s)"
    group.add_argument(
        "--limit",
        type=positive_int,
        default=default_limit,
        metavar="N",
        help=limit_help + default,
    )


def _state(text: str) -> str | int:
    """A state as given: a name, or a code (``102``, ``-101``)."""
    try:
        return int(text)
    except ValueError:
        return text


def filter_from_args(args: argparse.Namespace) -> TaskFilter:
    """The :class:`TaskFilter` that the options of :func:`add_filter_options` select."""
    states = [_state(part) for value in args.state or () for part in value.split(",")]
    return TaskFilter.build(
        states=states or None,
        subject=args.subject,
        older_than=args.older_than,
    )
