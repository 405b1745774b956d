"""Logs that explain failures: a WARNING per failed attempt and an ERROR with the traceback
on discard, each with its fields as extra= attributes; ``kanthorq run`` keeps the app's own
logging; ``--log-format json`` and ``--log-config``; "1 attempt", "1 running handler"."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import textwrap
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import kanthorq
from kanthorq.logconfig import JsonFormatter
from tests.conftest import Running, scratch_database, wait_until
from tests.test_cli import cli, spawn

Starter = Callable[..., Awaitable[Running]]
AppFactory = Callable[..., kanthorq.App]
FIELDS = ("consumer", "stream", "subject", "event_id", "attempt", "attempt_max")


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "kanthorq.outcomes" and r.levelno == level]


async def test_a_retried_failure_warns_and_a_discard_errs_with_the_traceback(
    make_app: AppFactory, start_app: Starter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kanthorq")
    app = make_app()

    @app.subscribe("order.*", consumer="email", max_retries=1, backoff=kanthorq.Fixed(delay=0))
    async def send_email(msg: kanthorq.Message) -> None:
        raise KeyError("missing")

    await start_app(app)
    event_id = await app.publish("order.created", b"{}")
    await wait_until(lambda: records(caplog, logging.ERROR), timeout=20)

    [warning] = records(caplog, logging.WARNING)
    fields = {name: getattr(warning, name) for name in FIELDS}
    assert fields == {
        "consumer": "email",
        "stream": "default",
        "subject": "order.created",
        "event_id": event_id,
        "attempt": 1,
        "attempt_max": 2,
    }
    assert warning.error_type == "KeyError"  # type: ignore[attr-defined]
    assert warning.error_message == "'missing'"  # type: ignore[attr-defined]
    assert warning.retry_in_s == 0  # type: ignore[attr-defined]
    datetime.fromisoformat(warning.retry_at)  # type: ignore[attr-defined]
    assert warning.getMessage().startswith(
        f"consumer email: task {event_id} (order.created) failed on attempt 1 of 2: "
        "KeyError: 'missing'; it runs again in 0s (at "
    )

    [error] = records(caplog, logging.ERROR)
    assert error.getMessage() == (
        f"consumer email: task {event_id} (order.created) discarded after 2 attempts (of 2): "
        "KeyError: 'missing'"
    )
    assert {name: getattr(error, name) for name in FIELDS} == {**fields, "attempt": 2}
    assert error.exc_info is not None
    text = logging.Formatter().format(error)
    assert "Traceback (most recent call last)" in text
    assert "in send_email" in text


async def test_grammar_one_attempt_and_one_running_handler(
    make_app: AppFactory, start_app: Starter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kanthorq")
    app = make_app(shutdown_timeout=0.1)
    release = asyncio.Event()

    @app.subscribe("once.*", consumer="once", max_retries=0)
    async def once(msg: kanthorq.Message) -> None:
        raise ValueError("no")

    @app.subscribe("slow.*", consumer="slow")
    async def slow(msg: kanthorq.Message) -> None:
        await release.wait()

    running = await start_app(app)
    await app.publish("once.x", b"{}")
    await wait_until(lambda: records(caplog, logging.ERROR), timeout=20)
    [error] = records(caplog, logging.ERROR)
    assert "discarded after 1 attempt (of 1): ValueError: no" in error.getMessage()

    await app.publish("slow.x", b"{}")
    worker = app.workers["slow"]
    await wait_until(lambda: len(worker._handlers) == 1, timeout=20)
    await running.stop()
    assert "consumer slow: waiting up to 0.1s for 1 running handler" in caplog.text
    release.set()


def test_the_json_formatter_writes_one_object_with_the_fields() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "kanthorq.x", logging.ERROR, "f.py", 1, "a %s", ("b",), sys.exc_info()
        )
    record.consumer = "email"
    record.odd = object()  # not JSON: shown as its repr
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["level"] == "ERROR"
    assert data["logger"] == "kanthorq.x"
    assert data["message"] == "a b"
    assert data["consumer"] == "email"
    assert data["odd"].startswith("<object object at")
    assert data["traceback"].startswith("Traceback")
    assert data["time"].endswith("Z")
    assert "args" not in data
    assert "msg" not in data


# ---- kanthorq run ---------------------------------------------------------------------

APP = """
import logging

import kanthorq

{configure}
logging.getLogger("app").info("hello from the app")
app = kanthorq.App(poll_interval=0.2)


@app.subscribe("order.*", consumer="email", max_retries=0)
async def send_email(msg: kanthorq.Message) -> None:
    raise KeyError("missing")
"""
BASIC = 'logging.basicConfig(level=logging.INFO, format="APP|%(levelname)s|%(name)s|%(message)s")'


async def run_until(
    tmp_path: Path, dsn: str, make_app: AppFactory, needle: str, *options: str
) -> str:
    """``kanthorq run`` the app until its stderr shows ``needle`` after one failing event;
    its whole stderr."""
    args = ("run", "log_app:app", "--dsn", dsn, *options)
    lines: list[str] = []
    async with spawn(*args, cwd=tmp_path) as proc:
        assert proc.stderr is not None
        stderr = proc.stderr

        async def read_until(text: str) -> None:
            while not any(text in line for line in lines):
                line = await stderr.readline()
                assert line, f"kanthorq run ended: {''.join(lines)}"
                lines.append(line.decode())

        await asyncio.wait_for(read_until("email"), 30)  # running consumers email
        async with make_app() as app:
            await app.publish("order.created", b"{}")
        await asyncio.wait_for(read_until(needle), 30)
        proc.send_signal(signal.SIGTERM)
        _, rest = await asyncio.wait_for(proc.communicate(), 30)
        lines.append(rest.decode())
    assert proc.returncode == 0, "".join(lines)
    return "".join(lines)


async def test_run_keeps_the_apps_own_logging(
    dsn: str, tmp_path: Path, make_app: AppFactory
) -> None:
    (tmp_path / "log_app.py").write_text(textwrap.dedent(APP.format(configure=BASIC)))
    err = await run_until(tmp_path, dsn, make_app, "discarded after 1 attempt")
    assert "APP|INFO|app|hello from the app" in err
    assert "APP|INFO|kanthorq.app|running consumers email" in err
    assert "APP|ERROR|kanthorq.outcomes|consumer email: task " in err


async def test_run_log_format_json_writes_one_object_per_line(
    dsn: str, tmp_path: Path, make_app: AppFactory
) -> None:
    (tmp_path / "log_app.py").write_text(textwrap.dedent(APP.format(configure="")))
    err = await run_until(tmp_path, dsn, make_app, "discarded", "--log-format", "json")
    objects = [json.loads(line) for line in err.splitlines() if line.strip()]
    [discard] = [o for o in objects if o["level"] == "ERROR"]
    assert discard["logger"] == "kanthorq.outcomes"
    assert discard["consumer"] == "email"
    assert discard["subject"] == "order.created"
    assert discard["event_id"].startswith("event_")
    assert discard["attempt"] == discard["attempt_max"] == 1
    assert discard["error_type"] == "KeyError"
    assert "raise KeyError" in discard["traceback"]
    assert any(o["message"] == "running consumers email" for o in objects)


def _write_configs(folder: Path) -> dict[str, Path]:
    formatter = {"format": "CFG %(name)s %(message)s"}
    config: dict[str, Any] = {
        "version": 1,
        "formatters": {"plain": formatter},
        "handlers": {"err": {"class": "logging.StreamHandler", "formatter": "plain"}},
        "loggers": {"kanthorq": {"level": "INFO", "handlers": ["err"]}},
    }
    (folder / "log.json").write_text(json.dumps(config))
    import yaml

    (folder / "log.yaml").write_text(yaml.safe_dump(config))
    (folder / "log.ini").write_text(
        textwrap.dedent(
            """
            [loggers]
            keys = root, kanthorq
            [handlers]
            keys = err
            [formatters]
            keys = plain
            [logger_root]
            handlers =
            [logger_kanthorq]
            level = INFO
            handlers = err
            qualname = kanthorq
            [handler_err]
            class = StreamHandler
            formatter = plain
            args = (sys.stderr,)
            [formatter_plain]
            format = CFG %(name)s %(message)s
            """
        )
    )
    return {p.suffix: p for p in folder.glob("log.*")}


async def test_log_config_takes_json_yaml_and_ini(server_dsn: str, tmp_path: Path) -> None:
    configs = _write_configs(tmp_path)
    assert set(configs) == {".json", ".yaml", ".ini"}
    for path in configs.values():
        async with scratch_database(server_dsn) as empty:
            result = await cli(
                "migrate", "up", "--dsn", empty, "--log-config", str(path), cwd=tmp_path
            )
        assert result.code == 0, result
        assert "CFG kanthorq.migrate applied migration 0001_registry" in result.err, path


async def test_run_log_config_replaces_the_apps_logging(
    dsn: str, tmp_path: Path, make_app: AppFactory
) -> None:
    configs = _write_configs(tmp_path)
    (tmp_path / "log_app.py").write_text(textwrap.dedent(APP.format(configure=BASIC)))
    err = await run_until(
        tmp_path, dsn, make_app, "discarded", "--log-config", str(configs[".json"])
    )
    assert "CFG kanthorq.app running consumers email" in err


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"formatters": {}}', "dictionary doesn't specify a version"),
        ("[1, 2]", "not a dict of logging.config"),
        ("{not json", "JSONDecodeError"),
    ],
)
async def test_a_bad_log_config_is_usage_error(content: str, needle: str, tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text(content)
    result = await cli("migrate", "status", "--log-config", "bad.json", cwd=tmp_path)
    assert result.code == 2, result
    assert "--log-config bad.json" in result.err
    assert needle in result.err
