"""Periodic events: ticks of cron expressions (in a time zone, across daylight saving) and of
intervals; once per tick; after downtime, the latest missed tick or every one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

import kanthorq
from kanthorq.commands.show import render
from kanthorq.errors import ConfigError, InvalidName, InvalidSubject
from kanthorq.periodic import TICK_KEY, make_schedule
from tests.conftest import stream_table, wait_until

AppFactory = Callable[..., kanthorq.App]
NY = ZoneInfo("America/New_York")


def schedule(cron: str | None = None, *, every: timedelta | None = None, **kw: Any) -> Any:
    options: dict[str, Any] = {
        "body": b"",
        "metadata": None,
        "stream": "default",
        "name": None,
        "tz": "UTC",
        "catch_up": False,
    }
    options.update(kw)
    return make_schedule(cron, "report.build", every=every, **options)


def local(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, NY).strftime("%Y-%m-%d %H:%M %Z")


def ticks(sched: Any, start: datetime, count: int) -> list[str]:
    found = sched.ticks_after(round(start.timestamp() * 1000))
    return [local(next(found)) for _ in range(count)]


def test_a_daily_cron_runs_once_when_the_clocks_go_back_and_after_they_jump() -> None:
    daily = schedule("30 1 * * *", tz="America/New_York")
    assert ticks(daily, datetime(2026, 10, 31, 12, tzinfo=NY), 3) == [
        "2026-11-01 01:30 EDT",  # 01:30 happens twice that night: the job runs once
        "2026-11-02 01:30 EST",
        "2026-11-03 01:30 EST",
    ]
    spring = schedule("30 2 * * *", tz="America/New_York")
    assert ticks(spring, datetime(2026, 3, 7, 12, tzinfo=NY), 2) == [
        "2026-03-08 03:00 EDT",  # 02:30 does not exist that night: the first valid minute
        "2026-03-09 02:30 EDT",
    ]
    hourly = schedule("0 * * * *", tz="America/New_York")
    assert ticks(hourly, datetime(2026, 11, 1, 0, 30, tzinfo=NY), 3) == [
        "2026-11-01 01:00 EDT",
        "2026-11-01 01:00 EST",  # an hourly job runs in both of that night's 1 o'clocks
        "2026-11-01 02:00 EST",
    ]


def test_interval_ticks_are_whole_multiples_and_missed_ticks_are_chosen() -> None:
    every = schedule(every=timedelta(seconds=10))
    assert [next(every.ticks_after(1_000_005_001)) for _ in range(1)] == [1_000_010_000]
    assert every.missed(1_000_000_000, 1_000_055_000) == [1_000_050_000]  # the latest only
    assert every.missed(1_000_000_000, 1_000_009_999) == []
    catch = schedule(every=timedelta(seconds=10), catch_up=True)
    assert catch.missed(1_000_000_000, 1_000_055_000) == [
        1_000_010_000 + n * 10_000 for n in range(5)
    ]
    bounded = schedule(every=timedelta(seconds=10), catch_up=2)
    assert bounded.missed(1_000_000_000, 1_000_055_000) == [1_000_040_000, 1_000_050_000]
    cron = schedule("0 * * * *", catch_up=True)
    hour = 3_600_000
    assert cron.missed(100 * hour, 103 * hour + 5) == [101 * hour, 102 * hour, 103 * hour]
    assert schedule("0 * * * *").missed(100 * hour, 103 * hour + 5) == [103 * hour]


@pytest.mark.parametrize(
    ("cron", "kw", "error", "message"),
    [
        (None, {}, ConfigError, "one of them"),
        ("* * * * *", {"every": timedelta(seconds=1)}, ConfigError, "one of them"),
        ("61 * * * *", {}, ConfigError, "not a cron expression"),
        ("* * *", {}, ConfigError, "not a cron expression"),
        ("* * * * *", {"tz": "Mars/Olympus"}, ConfigError, "unknown time zone"),
        ("* * * * *", {"catch_up": 0}, ConfigError, "catch_up"),
        (None, {"every": timedelta(0)}, ConfigError, "every must be"),
        ("* * * * *", {"name": "not a name"}, InvalidName, "schedule name"),
    ],
)
def test_bad_schedules_are_refused(
    cron: str | None, kw: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        schedule(cron, **kw)


def test_a_bad_subject_is_refused(make_app: AppFactory) -> None:
    with pytest.raises(InvalidSubject):
        make_app().periodic("* * * * *", "bad subject")


async def tick_events(db: asyncpg.Connection) -> list[tuple[int, str]]:
    """The ticks published (their time, from the metadata), with their keys."""
    table = await stream_table(db)
    rows = await db.fetch(f"SELECT metadata, dedup_key FROM {table} ORDER BY id")
    return [(json.loads(r["metadata"])[TICK_KEY], r["dedup_key"]) for r in rows]


@pytest.mark.parametrize("catch_up", [False, True])
async def test_after_downtime_the_latest_tick_or_every_missed_one(
    make_app: AppFactory, db: asyncpg.Connection, catch_up: bool
) -> None:
    hour = 3_600_000
    now = await db.fetchval("SELECT kanthorq_now_ms()")
    # the schedule last ticked between 4 and 5 hours before the latest whole hour (its
    # processes were down since): 5 ticks were missed, whatever the minute of the hour now
    last = now // hour * hour - 4 * hour - hour // 2
    await db.execute(
        "INSERT INTO kanthorq_schedule (name, stream, subject, spec, last_tick) "
        "VALUES ('hourly', 'default', 'report.build', 'x', $1)",
        last,
    )
    app = make_app()
    app.periodic("0 * * * *", "report.build", name="hourly", catch_up=catch_up)
    runner = asyncio.create_task(app.run())
    await wait_until(lambda: app.periodic_runner is not None and app.periodic_runner.published)
    await app.shutdown()
    await runner
    latest = now // hour * hour
    missed = list(range((last // hour + 1) * hour, latest + 1, hour))
    assert len(missed) == 5
    expected = missed if catch_up else [latest]
    published = await tick_events(db)
    assert published == [(t, f"kanthorq.periodic:hourly:{t}") for t in expected]
    row = await db.fetchrow("SELECT last_tick, next_tick FROM kanthorq_schedule")
    assert (row["last_tick"], row["next_tick"]) == (latest, latest + hour)


async def test_the_decorator_subscribes_the_handler_and_show_lists_the_schedule(
    make_app: AppFactory, db: asyncpg.Connection
) -> None:
    app = make_app(poll_interval=0.2)
    seen: list[kanthorq.Message] = []

    @app.periodic(every=timedelta(seconds=1), subject="beat.tick", body={"n": 1}, consumer="beats")
    async def beat(msg: kanthorq.Message) -> None:
        seen.append(msg)

    runner = asyncio.create_task(app.run())
    await wait_until(lambda: len(seen) >= 2, timeout=10)
    overview = await app.admin.show()
    await app.shutdown()
    await runner
    assert [m.json() for m in seen[:2]] == [{"n": 1}, {"n": 1}]
    first, second = (m.event.metadata[TICK_KEY] for m in seen[:2])
    assert second == first + 1000
    [shown] = overview.schedules
    assert (shown.name, shown.subject, shown.spec) == (
        "periodic_beat_tick",
        "beat.tick",
        "every 0:00:01",
    )
    assert shown.next_tick == shown.last_tick + 1000
    text = render(overview)
    assert "SCHEDULES" in text
    assert "periodic_beat_tick" in text
    assert "every 0:00:01" in text


async def test_a_new_schedule_does_not_publish_the_ticks_before_it_existed(
    make_app: AppFactory, db: asyncpg.Connection
) -> None:
    app = make_app()
    app.periodic("0 0 1 1 *", "report.yearly", name="yearly")  # a tick far away
    runner = asyncio.create_task(app.run())
    await wait_until(lambda: db.fetchval("SELECT count(*) = 1 FROM kanthorq_schedule"), timeout=10)
    await app.shutdown()
    await runner
    assert await tick_events(db) == []
    row = await db.fetchrow(
        "SELECT last_tick, next_tick, kanthorq_now_ms() AS now FROM kanthorq_schedule"
    )
    next_new_year = datetime(datetime.now(UTC).year + 1, 1, 1, tzinfo=UTC).timestamp() * 1000
    assert row["now"] - 60_000 < row["last_tick"] <= row["now"]
    assert row["next_tick"] == next_new_year
