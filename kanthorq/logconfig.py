"""How the CLI configures logging (the library never does): a text or JSON-lines handler on
stderr, or the user's own ``--log-config`` file.

``kanthorq run`` imports the app first: when the app's module configured logging itself
(``logging.basicConfig``, ``dictConfig``), that is left alone, unless ``--log-config`` or
``--log-format`` asks otherwise; an explicit ``--log-level`` still sets kanthorq's level.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.config
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from kanthorq.errors import ConfigError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
FORMATS = ("text", "json")
# the attributes every LogRecord has: the rest came from extra=
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, every ``extra=`` field of the record, and ``traceback`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in data:
                data[key] = value
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return msgspec.json.encode(data, enc_hook=repr).decode()


def configured() -> bool:
    """Whether logging has handlers already (the app's module configured it)."""
    if logging.getLogger().handlers:
        return True
    own = logging.getLogger("kanthorq").handlers
    return any(not isinstance(h, logging.NullHandler) for h in own)


def _handler(fmt: str) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    return handler


def _read_yaml(text: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise ConfigError(
            "--log-config: a YAML file needs PyYAML (pip install pyyaml); or give the same "
            "dict as JSON"
        ) from None
    return yaml.safe_load(text)


def load_file(path: Path) -> None:
    """Apply a logging configuration file: a ``logging.config`` dict as JSON (``.json``) or
    YAML (``.yaml``, ``.yml``; needs PyYAML), else an INI file for ``fileConfig``. Loggers
    that exist already (kanthorq's) stay enabled unless the dict says otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
        suffix = path.suffix.lower()
        if suffix in (".yaml", ".yml"):
            config = _read_yaml(text)
        elif suffix == ".json" or text.lstrip().startswith("{"):
            config = json.loads(text)
        else:
            logging.config.fileConfig(path, disable_existing_loggers=False)
            return
        if not isinstance(config, dict):
            raise ConfigError(f"--log-config {path}: not a dict of logging.config")
        config.setdefault("disable_existing_loggers", False)
        logging.config.dictConfig(config)
    except ConfigError:
        raise
    except Exception as exc:  # a missing file, bad JSON, a dict that dictConfig refuses
        raise ConfigError(f"--log-config {path}: {type(exc).__name__}: {exc}") from None


def configure(
    level: str | None,
    default_level: str,
    fmt: str | None = None,
    config: Path | None = None,
    *,
    respect_app: bool = False,
) -> None:
    """Configure logging for a command. ``level``, ``fmt`` and ``config`` are the options as
    given (None: not given). With ``respect_app`` (``kanthorq run``, after importing the
    app), logging that the app configured is kept unless ``fmt`` or ``config`` is given."""
    if config is not None:
        load_file(config)
    elif respect_app and fmt is None and configured():
        pass  # the app's own configuration
    else:
        # kanthorq's records; other libraries' (pgserver's pg_ctl chatter) stay at WARNING.
        # An explicit --log-format replaces what the app configured (force).
        logging.basicConfig(
            level=logging.WARNING, handlers=[_handler(fmt or "text")], force=respect_app
        )
        logging.getLogger("kanthorq").setLevel(level or default_level)
        return
    if level is not None:
        logging.getLogger("kanthorq").setLevel(level)


def add_options(group: argparse._ArgumentGroup, unset: Any) -> None:
    """The CLI's --log-level, --log-format and --log-config (``unset``: their default)."""
    group.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        metavar="LEVEL",
        default=unset,
        help="kanthorq's log level on stderr: %(choices)s (default: INFO for run, else WARNING)",
    )
    group.add_argument(
        "--log-format",
        choices=FORMATS,
        default=unset,
        help="text (the default) or json: one JSON object per line, with each record's "
        "fields (consumer, event_id, ...)",
    )
    group.add_argument(
        "--log-config",
        type=Path,
        metavar="FILE",
        default=unset,
        help="configure logging from FILE instead: a logging.config dict as JSON (.json) or "
        "YAML (.yaml, .yml; only when PyYAML is installed), else an INI file for "
        "logging.config.fileConfig",
    )


def from_args(args: argparse.Namespace, *, respect_app: bool = False) -> None:
    """:func:`configure` from the CLI's options."""
    configure(
        args.log_level,
        args.default_log_level,
        getattr(args, "log_format", None),
        getattr(args, "log_config", None),
        respect_app=respect_app,
    )
