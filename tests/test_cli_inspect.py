"""``kanthorq show`` and ``kanthorq tasks list|show``, run in-process through kanthorq.cli.main."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import pytest

import kanthorq
from kanthorq.admin.views import ConsumerOverview, Overview, StreamOverview
from kanthorq.cli import main
from kanthorq.commands import show
from tests.test_admin_inspect import ZERO_STATES, convert, register, set_tasks

AppFactory = Callable[..., kanthorq.App]


@dataclass
class Seeded:
    dsn: str
    ids: list[str]


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
async def seeded(make_app: AppFactory, dsn: str, db: asyncpg.Connection) -> Seeded:
    """Stream default: 6 order events (0-3 JSON bodies, 4 binary, 5 a terminal escape), then
    3 user events, 2 more order events and a user event. Consumer email (order.>) converted
    the first 9: tasks 0-1 completed, 2 retryable with an error, 3-5 available."""
    async with make_app() as app:
        ids = await app.publish_many(
            [("order.created", {"order_id": n, "items": ["a", "b"]}) for n in range(4)]
            + [("order.paid", b"\x00\x01\x02binary\xff"), ("order.paid", b"\x1b[2Jgotcha")]
            + [("user.created", b"{}")] * 3
            + [("order.created", b"{}")] * 2
            + [("user.created", b"{}")]
        )
        queries = await register(app)
        await convert(app, queries, 9)
    await set_tasks(db, "email", ids[0:2], "state = 101, attempt_count = 1")
    record = json.dumps(
        {
            "at": 1_700_000_000_000,
            "attempt": 1,
            "error": "ValueError: no stock",
            "traceback": "Traceback (most recent call last):\n"
            '  File "app.py"\nValueError: no stock\n',
        }
    )
    await set_tasks(
        db,
        "email",
        ids[2:3],
        "state = 102, attempt_count = 1, schedule_at = $2 + 60000, "
        f"attempted_error = ARRAY['{record}']::JSONB[]",
    )
    return Seeded(dsn, ids)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    code = main(list(args))
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def assert_usage_error(result: Result, *needles: str) -> None:
    assert result.code == 2, result
    assert result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("kanthorq: error: ")
    for needle in needles:
        assert needle in lines[0]


def row_of(text: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is ``first``."""
    for line in text.splitlines():
        cells = line.split()
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{text}")


# ---- kanthorq show ---------------------------------------------------------------------


def test_show_text(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "show", "--dsn", seeded.dsn)
    assert result.code == 0, result
    text = result.out
    assert text.splitlines()[0] == "STREAMS"
    assert row_of(text, "NAME")[:3] == ["NAME", "EVENTS", "NEWEST"]
    assert row_of(text, "default")[1] == "12"
    assert "ago)" in row_of(text, "default")[-1]
    consumer = row_of(text, "email")  # NAME STREAM SUBJECTS LAG OLDEST-DUE PAST-TIMEOUT
    assert consumer[1:4] == ["default", "order.>", "2"]
    assert consumer[-1] == "0"
    assert row_of(text, "CONSUMER")[1:] == [
        "PENDING",
        "AVAILABLE",
        "RUNNING",
        "RETRYABLE",
        "COMPLETED",
        "DISCARDED",
        "CANCELLED",
    ]
    tasks = text.split("TASKS")[1]
    assert row_of(tasks, "email")[1:] == ["0", "3", "0", "1", "2", "0", "0"]
    assert "~" not in text  # nothing estimated at this size


def test_show_json(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "show", "--json", "--dsn", seeded.dsn)
    assert result.code == 0, result
    data = json.loads(result.out)
    assert set(data) == {"now", "exact_limit", "streams", "consumers", "schedules"}
    (stream,) = data["streams"]
    assert stream["name"] == "default"
    assert stream["events"] == 12
    assert stream["newest_event_id"] == max(seeded.ids)
    assert stream["estimated"] == []
    (consumer,) = data["consumers"]
    assert consumer["name"] == "email"
    assert consumer["includes"] == ["order.>"]
    assert (consumer["behind"], consumer["lag"]) == (3, 2)
    assert consumer["tasks"] == {**ZERO_STATES, "available": 3, "retryable": 1, "completed": 2}
    assert consumer["past_visibility_timeout"] == 0
    assert consumer["oldest_due_age_ms"] >= 0
    assert consumer["estimated"] == []


def test_show_one_stream_and_bad_streams(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run(capsys, "show", "--stream", "default", "--json", "--dsn", seeded.dsn)
    assert result.code == 0
    assert [s["name"] for s in json.loads(result.out)["streams"]] == ["default"]
    assert_usage_error(run(capsys, "show", "--stream", "nope", "--dsn", seeded.dsn), "'nope'")
    assert_usage_error(run(capsys, "show", "--stream", "no pe", "--dsn", seeded.dsn), "stream")


def test_show_an_empty_database(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "show", "--dsn", dsn)
    assert (result.code, result.out) == (0, "no streams yet: publishing to a stream creates it\n")
    result = run(capsys, "show", "--json", "--dsn", dsn)
    assert json.loads(result.out)["streams"] == []


def test_show_marks_estimates() -> None:
    overview = Overview(
        now=1_000_000,
        exact_limit=10_000,
        streams=[StreamOverview("big", "stream_x", 9_876_543, estimated=("events",))],
        consumers=[
            ConsumerOverview(
                "c",
                "big",
                ("a.*",),
                ("a.b",),
                4,
                30_000,
                "",
                behind=123_456,
                lag=65_432,
                tasks={**ZERO_STATES, "completed": 9_000_000, "available": 12},
                oldest_due_age_ms=125_000,
                past_visibility_timeout=3,
                estimated=("behind", "lag", "tasks.completed"),
            )
        ],
    )
    text = show.render(overview)
    assert row_of(text, "big")[1] == "~9,876,543"
    assert row_of(text, "c")[1:] == ["big", "a.*", "except", "a.b", "~65,432", "2m", "5s", "3"]
    tasks = text.split("TASKS")[1]
    assert row_of(tasks, "c")[1:] == ["0", "12", "0", "0", "~9,000,000", "0", "0"]
    assert text.splitlines()[-1].startswith("~ estimated from PostgreSQL's statistics")


# ---- kanthorq tasks list ---------------------------------------------------------------


def test_tasks_list_text(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "tasks", "list", "--consumer", "email", "--dsn", seeded.dsn)
    assert result.code == 0, result
    lines = result.out.splitlines()
    assert lines[0].split() == [
        "EVENT",
        "ID",
        "SUBJECT",
        "STATE",
        "ATTEMPTS",
        "NEXT",
        "RUN",
        "UPDATED",
        "LAST",
        "ERROR",
    ]
    assert [line.split()[0] for line in lines[1:]] == seeded.ids[5::-1]  # newest first
    retryable = row_of(result.out, seeded.ids[2])
    assert retryable[1:5] == ["order.created", "retryable", "1/4", "in"]
    assert result.out.splitlines()[4].endswith("ValueError: no stock")
    assert row_of(result.out, seeded.ids[0])[1:5] == ["order.created", "completed", "1/4", "-"]
    available = row_of(result.out, seeded.ids[3])
    assert available[2:5] == ["available", "0/4", "due"]
    assert available[6] == "ago"


def test_tasks_list_filters_and_json(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    base = ("tasks", "list", "--consumer", "email", "--dsn", seeded.dsn, "--json")
    result = run(capsys, *base, "--state", "retryable,completed")
    assert result.code == 0, result
    data = json.loads(result.out)
    assert (data["shown"], data["matched"], data["matched_exact"]) == (3, 3, True)
    tasks = data["tasks"]
    assert [t["event_id"] for t in tasks] == [seeded.ids[2], seeded.ids[1], seeded.ids[0]]
    assert tasks[0]["last_error"] == "ValueError: no stock"
    assert tasks[0]["state"] == "retryable"
    assert set(tasks[0]) >= {"attempts", "schedule_at", "errors", "created_at", "updated_at"}
    result = run(capsys, *base, "--state", "available", "--state", "102", "--limit", "2")
    data = json.loads(result.out)
    assert [t["event_id"] for t in data["tasks"]] == [seeded.ids[5], seeded.ids[4]]
    assert (data["shown"], data["matched"]) == (2, 4)  # 3 available and 1 retryable
    result = run(capsys, *base, "--subject", "order.paid", "--order", "oldest")
    assert [t["event_id"] for t in json.loads(result.out)["tasks"]] == seeded.ids[4:6]
    for age in ("3600", "3600s", "60m", "1h", "1d"):  # one form for durations everywhere
        result = run(capsys, *base, "--older-than", age)
        assert json.loads(result.out) == {
            "tasks": [],
            "shown": 0,
            "matched": 0,
            "matched_exact": True,
        }
    result = run(
        capsys, "tasks", "list", "--consumer", "email", "--state", "pending", "--dsn", seeded.dsn
    )
    assert (result.code, result.out) == (0, "no tasks match\n")


def test_tasks_list_says_how_many_it_did_not_show(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ("tasks", "list", "--consumer", "email", "--dsn", seeded.dsn)
    result = run(capsys, *base, "--limit", "2")
    assert result.code == 0, result
    assert result.out.splitlines()[-1] == "2 of 6; --limit to see more"
    assert len(result.out.splitlines()) == 1 + 2 + 1  # headers, 2 tasks, the count
    every = run(capsys, *base, "--limit", "6")
    assert "of 6" not in every.out
    assert len(every.out.splitlines()) == 1 + 6


def test_tasks_list_bad_inputs(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    base = ("tasks", "list", "--dsn", seeded.dsn)
    assert_usage_error(run(capsys, *base, "--consumer", "nobody"), "no consumer named 'nobody'")
    assert_usage_error(run(capsys, *base, "--consumer", "no body"), "consumer name")
    assert_usage_error(
        run(capsys, *base, "--consumer", "email", "--state", "stuck"),
        "unknown task state 'stuck'",
        "retryable",
    )
    assert_usage_error(
        run(capsys, *base, "--consumer", "email", "--subject", "order.>.x"), "order.>.x"
    )
    for bad in (("--limit", "0"), ("--older-than", "-1"), ("--order", "random")):
        with pytest.raises(SystemExit) as exited:
            main([*base, "--consumer", "email", *bad])
        assert exited.value.code == 2
        assert bad[0] in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["tasks", "list", "--dsn", seeded.dsn])  # --consumer is required
    assert "--consumer" in capsys.readouterr().err


# ---- kanthorq tasks show ---------------------------------------------------------------


def test_tasks_show_text(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    event_id = seeded.ids[2]
    result = run(capsys, "tasks", "show", "--consumer", "email", event_id, "--dsn", seeded.dsn)
    assert result.code == 0, result
    text = result.out
    assert row_of(text, "task") == ["task", event_id]
    assert row_of(text, "state") == ["state", "retryable", "(102)"]
    assert row_of(text, "attempts") == ["attempts", "1", "of", "4"]
    assert "(in" in row_of(text, "next")
    assert "errors (1)" in text
    assert "  #1  attempt 1  at 2023-11-14 22:13:20Z" in text
    assert "      ValueError: no stock\n      Traceback (most recent call last):" in text
    assert '        File "app.py"' in text
    assert "  body (json, " in text
    assert '    {\n      "order_id": 2,\n      "items": [\n        "a",' in text


def test_tasks_show_binary_and_unsafe_bodies(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ("tasks", "show", "--consumer", "email", "--dsn", seeded.dsn)
    text = run(capsys, *base, seeded.ids[4]).out
    assert "  body (binary, 10 bytes)" in text
    assert "    00000000  00 01 02 62 69 6e 61 72 79 ff" in text
    assert "|...binary.|" in text
    result = run(capsys, *base, seeded.ids[5])
    assert result.code == 0
    assert "\x1b" not in result.out
    assert "  body (binary, 10 bytes)" in result.out


def test_tasks_show_json(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    base = ("tasks", "show", "--consumer", "email", "--json", "--dsn", seeded.dsn)
    data = json.loads(run(capsys, *base, seeded.ids[2]).out)
    assert data["event_id"] == seeded.ids[2]
    assert (data["consumer"], data["stream"], data["state"]) == ("email", "default", "retryable")
    assert data["errors"][0]["error"] == "ValueError: no stock"
    assert data["errors"][0]["traceback"].startswith("Traceback")
    assert data["event"]["subject"] == "order.created"
    assert data["event"]["body"] == {
        "size": len(b'{"order_id":2,"items":["a","b"]}'),
        "encoding": "json",
        "value": {"order_id": 2, "items": ["a", "b"]},
    }
    binary = json.loads(run(capsys, *base, seeded.ids[4]).out)["event"]["body"]
    assert binary == {"size": 10, "encoding": "base64", "value": "AAECYmluYXJ5/w=="}


def test_tasks_show_missing(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    base = ("tasks", "show", "--dsn", seeded.dsn)
    result = run(capsys, *base, "--consumer", "email", seeded.ids[7])  # a user.created event
    assert_usage_error(result, "consumer 'email' has no task for event", seeded.ids[7])
    result = run(capsys, *base, "--consumer", "nobody", seeded.ids[0])
    assert_usage_error(result, "no consumer named 'nobody'")
