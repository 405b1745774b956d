"""One consistent CLI: durations and times in one form, --json on every command, one exit
code rule, one behaviour on a blank database, tasks rerun, shell completion, and the
reserved ``kanthorq.`` metadata keys."""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

import kanthorq
from kanthorq import TaskState
from kanthorq.cli import build_parser, main
from kanthorq.errors import InvalidPayload
from kanthorq.schedule import SCHEDULE_KEY
from kanthorq.testing import drain
from kanthorq.testing.databases import scratch_database
from tests.conftest import stream_table, task_table
from tests.test_cli import cli

AppFactory = Callable[..., kanthorq.App]
NO_JSON = {"run", "dashboard", "serve", "completion"}  # long-running commands, a script printer


@dataclass
class Result:
    code: int
    out: str
    err: str


async def kq(capsys: pytest.CaptureFixture[str], *argv: str) -> Result:
    """``kanthorq ARGV`` in this process (in a thread: it runs its own event loop)."""
    try:
        code = await asyncio.to_thread(main, list(argv))
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def leaf_commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command that runs (no further subcommand), with its parser."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += leaf_commands(sub, (*path, name))
    return found or [(path, parser)]


def test_every_command_has_help_and_replay_says_what_it_does_not_do() -> None:
    for path, parser in leaf_commands(build_parser()):
        assert parser.format_help().startswith(f"usage: kanthorq {' '.join(path)}"), path
    [(_, replay)] = [c for c in leaf_commands(build_parser()) if c[0] == ("replay",)]
    text = " ".join(replay.format_help().split())
    assert "What it does not do: run an event again that already has a task" in text
    assert "kanthorq tasks rerun runs them again" in text


# ---- durations and times --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("3d", 259_200), ("1.5h", 5400)],
)
async def test_pub_delay_takes_every_duration_form(
    text: str, seconds: int, dsn: str, db: asyncpg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    before = await db.fetchval("SELECT kanthorq_now_ms()")
    result = await kq(capsys, "pub", "a.b", "x", "--delay", text, "--dsn", dsn)
    after = await db.fetchval("SELECT kanthorq_now_ms()")
    assert result.code == 0, result
    metadata = await db.fetchval(f"SELECT metadata FROM {await stream_table(db)}")
    at = json.loads(metadata)[SCHEDULE_KEY]
    assert before + seconds * 1000 - 1000 <= at <= after + seconds * 1000 + 1000


@pytest.mark.parametrize(
    "argv",
    [
        ["pub", "a.b", "x", "--delay", "1h"],
        ["tasks", "list", "--consumer", "c", "--older-than", "1h"],
        ["tasks", "cancel", "--consumer", "c", "--older-than", "90"],
        ["prune", "events", "--before", "15m"],
        ["prune", "tasks", "--consumer", "c", "--before", "2026-11-01T00:00:00+02:00"],
        ["replay", "c", "--since", "3d"],
        ["replay", "c", "--since", "2026-11-01T00:00:00Z"],
    ],
)
def test_every_duration_option_parses_both_forms(argv: list[str]) -> None:
    build_parser().parse_args(argv)  # no SystemExit


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["tasks", "list", "--consumer", "c", "--older-than", "1y"], ["not a duration", "90s"]),
        (["pub", "a.b", "--delay", "2026-11-01T00:00:00Z"], ["not a duration", "3d"]),
        (["prune", "events", "--before", "x"], ["not a duration or a time", "15m", "ISO 8601"]),
        (["replay", "c", "--since", "2026-11-01"], ["no UTC offset"]),
    ],
)
async def test_a_bad_duration_names_both_forms(
    argv: list[str], needles: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    result = await kq(capsys, *argv, "--dsn", "postgresql://nobody@127.0.0.1:1/none")
    assert result.code == 2
    for needle in needles:
        assert needle in result.err


# ---- --json everywhere ----------------------------------------------------------------------


def test_every_command_but_run_and_completion_takes_json() -> None:
    commands = leaf_commands(build_parser())
    assert len(commands) >= 15
    for path, parser in commands:
        options = {o for a in parser._actions for o in a.option_strings}
        assert ("--json" in options) is (path[0] not in NO_JSON), path


async def test_migrate_and_pub_print_json(
    server_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with scratch_database(server_dsn) as blank:
        status = json.loads((await kq(capsys, "migrate", "status", "--json", "--dsn", blank)).out)
        assert status[0] == {"version": 1, "name": "registry", "applied": False}
        assert not any(m["applied"] for m in status)
        up = json.loads((await kq(capsys, "migrate", "up", "--json", "--dsn", blank)).out)
        assert [m["version"] for m in up["applied"]] == [m["version"] for m in status]
        status = json.loads((await kq(capsys, "migrate", "status", "--json", "--dsn", blank)).out)
        assert all(m["applied"] for m in status)
        again = await kq(capsys, "migrate", "up", "--json", "--dsn", blank)
        assert json.loads(again.out) == {"applied": []}
        pub = await kq(capsys, "pub", "a.b", "{}", "--json", "--dsn", blank)
        assert pub.code == 0, pub
        assert json.loads(pub.out)["id"].startswith("event_")
        down = await kq(capsys, "migrate", "down", "--yes", "--json", "--dsn", blank)
        assert [m["version"] for m in json.loads(down.out)["reverted"]] == [status[-1]["version"]]


async def test_pub_lines_json_is_one_object_per_line(dsn: str, tmp_path: Path) -> None:
    result = await cli(
        "pub", "a.b", "--lines", "--json", "--dsn", dsn, cwd=tmp_path, stdin=b"1\n2\n"
    )
    assert result.code == 0, result
    lines = [json.loads(line) for line in result.out.splitlines()]
    assert len(lines) == 2
    assert all(set(line) == {"id"} for line in lines)


# ---- one behaviour on a blank database --------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["pub", "a.b", "x"],
        ["show"],
        ["tasks", "list", "--consumer", "c"],
        ["tasks", "rerun", "--consumer", "c", "--all"],
        ["replay", "c", "--since", "1d"],
        ["prune", "events", "--before", "1d"],
        ["drop", "stream", "default", "--yes"],
    ],
)
async def test_only_migrate_changes_the_schema(
    argv: list[str], server_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with scratch_database(server_dsn) as blank:
        result = await kq(capsys, *argv, "--dsn", blank)
        assert result.code == 1, result
        assert "lacks kanthorq's schema" in result.err
        assert "kanthorq migrate up" in result.err
        conn = await asyncpg.connect(blank)
        try:
            tables = await conn.fetchval(
                "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'kanthorq%'"
            )
        finally:
            await conn.close()
        assert tables == 0  # nothing was created


# ---- exit codes: a named thing that does not exist is exit 2 -----------------------------------


async def test_missing_tasks_and_events_exit_2_after_the_rest_is_done(
    make_app: AppFactory, dsn: str, db: asyncpg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    app = make_app()

    @app.subscribe("a.b", consumer="c", max_retries=0)
    async def handle(msg: kanthorq.Message) -> None:
        raise kanthorq.Discard("no")

    async with app:
        event_id = await app.publish("a.b")
    await drain(app, timeout=20)
    missing = "event_01jzzzzzzzzzzzzzzzzzzzzzzz"
    base = ("--consumer", "c", "--dsn", dsn)

    shown = await kq(capsys, "tasks", "show", *base, missing)
    assert (shown.code, shown.out) == (2, "")
    assert f"consumer 'c' has no task for event '{missing}'" in shown.err

    resumed = await kq(capsys, "tasks", "resume", *base, event_id, missing, "--json")
    assert resumed.code == 2
    report = json.loads(resumed.out)
    assert report["updated"] == 1  # the task that exists was resumed
    assert report["skipped"] == {"not found": 1}
    assert report["details"]["not_found"] == [missing]
    assert f"consumer 'c' has no task for '{missing}'" in resumed.err
    table = await task_table(db, "c")
    assert await db.fetchval(f"SELECT state FROM {table}") == TaskState.AVAILABLE

    # a filter that matches nothing names nothing: done, exit 0
    nothing = await kq(capsys, "tasks", "retry", *base, "--state", "retryable")
    assert (nothing.code, nothing.out) == (0, "retry: 0 updated\n")

    replayed = await kq(capsys, "replay", "c", "--from-event", missing, "--dsn", dsn)
    assert replayed.code == 2
    assert "replay: 0 updated; left alone: 1 event not found" in replayed.out
    assert f"has no event '{missing}'" in replayed.err
    unknown = await kq(capsys, "tasks", "list", "--consumer", "nobody", "--dsn", dsn)
    assert unknown.code == 2


# ---- tasks rerun --------------------------------------------------------------------------------


async def test_rerun_runs_finished_tasks_again_as_new_attempts(
    make_app: AppFactory, dsn: str, db: asyncpg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    app = make_app()
    runs: list[tuple[str, int, int]] = []
    fixed = False

    @app.subscribe("order.*", consumer="c", max_retries=1, backoff=kanthorq.Fixed(delay=0))
    async def handle(msg: kanthorq.Message) -> None:
        runs.append((msg.json()["n"], msg.task.attempt_count, msg.task.attempts_used))
        n = msg.json()["n"]
        if n == "cancel":
            await msg.cancel()
        elif n == "bug" and not fixed:
            raise ValueError("the bug")

    async with app:
        ids = {
            n: await app.publish("order.paid", {"n": n})
            for n in ("done", "bug", "cancel", "gone", "later")
        }
    await drain(app, timeout=20, consumers=["c"])
    table = await task_table(db, "c")
    await db.execute(
        f"UPDATE {table} SET state = 102, schedule_at = kanthorq_now_ms() + 3600000 "
        "WHERE event_id = $1",
        ids["later"],
    )
    await db.execute(f"DELETE FROM {await stream_table(db)} WHERE id = $1", ids["gone"])
    before = dict(await db.fetch(f"SELECT event_id, attempt_count FROM {table}"))
    assert before[ids["bug"]] == 2  # discarded after its 2 attempts

    fixed = True
    runs.clear()
    result = await kq(capsys, "tasks", "rerun", "--consumer", "c", "--all", "--dsn", dsn)
    assert result.code == 0, result
    assert result.out == (
        "rerun: 3 updated; left alone: 1 its event was deleted, 1 wrong state (retryable)\n"
    )
    report = (await drain(app, timeout=20))["c"]

    assert sorted(report.completed) == sorted([ids["done"], ids["bug"]])
    assert report.cancelled == [ids["cancel"]]
    # each ran once more, as the next attempt, with its budget starting again
    assert sorted(runs) == sorted([(n, before[ids[n]] + 1, 1) for n in ("done", "bug", "cancel")])
    # the Python API: by id; a task that is not finished is left alone
    async with app:
        again = await app.admin.rerun("c", [ids["done"], ids["later"]])
    assert (again.updated, again.skipped) == (1, {"wrong state (retryable)": 1})


# ---- shell completion ----------------------------------------------------------------------------


async def test_completion_scripts_complete_commands_and_options(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    zsh = await kq(capsys, "completion", "zsh")
    assert zsh.code == 0
    assert zsh.out.startswith("#compdef kanthorq")
    assert "rerun" in zsh.out
    bash = await kq(capsys, "completion", "bash")
    script = tmp_path / "kanthorq.bash"
    script.write_text(bash.out)

    def complete(*words: str) -> list[str]:
        line = "COMP_WORDS=(" + " ".join(words) + f"); COMP_CWORD={len(words) - 1}"
        shell = f"source {script}; {line}; _shtab_kanthorq; echo ${{COMPREPLY[@]}}"
        done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, check=True)
        return done.stdout.split()

    assert complete("kanthorq", "ta") == ["tasks"]
    assert complete("kanthorq", "tasks", "re") == ["resume", "retry", "rerun"]
    assert "--before" in complete("kanthorq", "prune", "events", "--b")
    bad = await kq(capsys, "completion", "fish")
    assert bad.code == 2


# ---- reserved metadata keys ----------------------------------------------------------------------


async def test_kanthorq_metadata_keys_are_reserved(
    make_app: AppFactory, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with make_app() as app:
        with pytest.raises(InvalidPayload, match=r"'kanthorq\.attempt_base' is reserved"):
            await app.publish("a.b", metadata={"kanthorq.attempt_base": 0})
        # the keys an event may carry: its schedule, a periodic tick
        await app.publish("a.b", metadata={SCHEDULE_KEY: 0, "kanthorq.tick": 1, "mine": 2})
    result = await kq(capsys, "pub", "a.b", "x", "--metadata", '{"kanthorq.x": 1}', "--dsn", dsn)
    assert result.code == 2
    assert "is reserved" in result.err
