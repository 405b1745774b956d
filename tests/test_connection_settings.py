"""listen_dsn and the statement cache size: given, or from the environment; checked before
any connection is made, by the library and by the CLI."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

import kanthorq
from kanthorq.errors import ConfigError

NOWHERE = "postgresql://nobody@127.0.0.1:1/none"  # a connection attempt would fail otherwise


@pytest.mark.parametrize("listen_dsn", ["mysql://u@h/db", "", "localhost:5432", 123])
def test_a_bad_listen_dsn_is_a_config_error(listen_dsn: object) -> None:
    with pytest.raises(ConfigError, match="listen_dsn"):
        kanthorq.App(NOWHERE, listen_dsn=listen_dsn)  # type: ignore[arg-type]


def test_a_listen_dsn_error_does_not_show_the_password() -> None:
    with pytest.raises(ConfigError, match="listen_dsn") as info:
        kanthorq.App(NOWHERE, listen_dsn="mysql://kq:hunter2secret@h/db")
    assert "hunter2secret" not in str(info.value)


async def test_a_bad_listen_dsn_from_the_environment_fails_the_open_before_connecting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KANTHORQ_LISTEN_DSN", "mysql://u@h/db")
    app = kanthorq.App(NOWHERE)  # checked when it opens, like $KANTHORQ_DSN
    with pytest.raises(ConfigError, match="KANTHORQ_LISTEN_DSN"):
        await app.open()  # not ConnectionFailed: nothing was tried


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "0x10"])
def test_a_bad_statement_cache_size_from_the_environment_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("KANTHORQ_STATEMENT_CACHE_SIZE", value)
    with pytest.raises(ConfigError, match=r"\$KANTHORQ_STATEMENT_CACHE_SIZE must be an int >= 0"):
        kanthorq.App(NOWHERE)


def test_the_statement_cache_size_comes_from_the_argument_else_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert kanthorq.App(NOWHERE).statement_cache_size == 100
    monkeypatch.setenv("KANTHORQ_STATEMENT_CACHE_SIZE", " 0 ")
    assert kanthorq.App(NOWHERE).statement_cache_size == 0
    assert kanthorq.App(NOWHERE, statement_cache_size=20).statement_cache_size == 20
    monkeypatch.setenv("KANTHORQ_STATEMENT_CACHE_SIZE", "")
    assert kanthorq.App(NOWHERE).statement_cache_size == 100


async def cli(*args: str, env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kanthorq",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("KANTHORQ_")}, **env},
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


@pytest.mark.parametrize(
    "args",
    [
        ("show", "--dsn", NOWHERE),
        ("migrate", "status", "--dsn", NOWHERE),
        ("pub", "a.b", "x", "--dsn", NOWHERE),
    ],
)
async def test_the_cli_refuses_a_bad_statement_cache_size_before_connecting(
    args: tuple[str, ...],
) -> None:
    code, err = await cli(*args, env={"KANTHORQ_STATEMENT_CACHE_SIZE": "lots"})
    assert code == 2, err
    assert "KANTHORQ_STATEMENT_CACHE_SIZE must be an int >= 0" in err
    code, err = await cli(*args, "--statement-cache-size", "-1", env={})
    assert code == 2, err
    assert "--statement-cache-size" in err


async def test_kanthorq_run_refuses_a_bad_listen_dsn() -> None:
    code, err = await cli(
        "run", "nosuchmodule:app", "--listen-dsn", "mysql://u@h/db", "--dsn", NOWHERE, env={}
    )
    assert code == 2, err
    assert "listen_dsn" in err
