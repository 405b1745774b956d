"""The dashboard through HTTP (its ASGI app, in process): pages against the database, the
token, CSRF, the read-only mode, the actions and what they report, escaping, mounting under
a prefix, the CLI's safety checks, and the admin's activity figures it draws."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette

import kanthorq
from kanthorq import dashboard
from kanthorq.cli import main
from kanthorq.dashboard import present
from kanthorq.dashboard.guard import COOKIE, Guard
from kanthorq.ids import event_id_at
from kanthorq.sqlfiles import load
from kanthorq.tokens import Token
from tests.dashboard_data import arrange, states

TOKEN = "s3cret-dashboard-token"
SESSION = Guard.session(Token(TOKEN))  # the cookie that signing in with TOKEN sets
AppFactory = Callable[..., kanthorq.App]


@pytest.fixture
async def app(make_app: AppFactory) -> AsyncIterator[kanthorq.App]:
    async with make_app() as opened:
        yield opened


def client(web: Starlette, cookie: str | None = None) -> httpx.AsyncClient:
    cookies = {COOKIE: cookie} if cookie else None
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=web), base_url="http://dash", cookies=cookies
    )


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found, "no CSRF token in the page"
    return found.group(1)


async def test_overview_shows_streams_consumers_and_counts_from_the_database(
    app: kanthorq.App, db: asyncpg.Connection
) -> None:
    arranged = await arrange(app, db)
    async with client(dashboard.app(app)) as http:
        page = await http.get("/")
    assert page.status_code == 200
    text = page.text
    assert 'data-stream="default"' in text
    assert 'data-consumer="email"' in text
    counts = dict(await db.fetch(f"SELECT state, count(*) FROM {arranged.table} GROUP BY state"))
    row = text[text.index('data-consumer="email"') :]
    assert f'data-field="retryable">{counts[102]}<' in row
    assert f'data-field="completed">{counts[101]}<' in row
    assert 'data-field="failures">' in row
    assert "read-only" in text  # no token: it says so
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert "htmx.min.js" in text
    assert "unpkg" not in text
    assert "cdn" not in text.lower()


async def test_static_htmx_is_served_from_the_package(app: kanthorq.App) -> None:
    async with client(dashboard.app(app)) as http:
        js = await http.get("/static/htmx.min.js")
    assert js.status_code == 200
    assert "htmx" in js.text[:200]


async def test_consumer_page_filters_pages_and_marks_counts(
    app: kanthorq.App, db: asyncpg.Connection
) -> None:
    arranged = await arrange(app, db)
    async with client(dashboard.app(app)) as http:
        page = await http.get("/consumers/email", params={"state": "retryable"})
        assert page.status_code == 200
        shown = re.findall(r'<tr data-event="([^"]+)"', page.text)
        assert set(shown) == {arranged.ids[n] for n in ("failing", "go", "injected")}
        assert "3 tasks match" in page.text
        oldest = await http.get(
            "/consumers/email", params={"state": "retryable", "order": "oldest"}
        )
        assert re.findall(r'<tr data-event="([^"]+)"', oldest.text) == sorted(shown)
        subject = await http.get("/consumers/email", params={"subject": "order.ok*"})
        assert subject.status_code == 400  # a subject filter takes whole tokens: order.*
        subject = await http.get("/consumers/email", params={"subject": "order.failing"})
        assert re.findall(r'<tr data-event="([^"]+)"', subject.text) == [arranged.ids["failing"]]
        assert "could read every task" in subject.text
        aged = await http.get("/consumers/email", params={"age": "1h"})
        assert "No tasks match" in aged.text  # every task was created just now
        bad = await http.get("/consumers/email", params={"age": "soon"})
        assert bad.status_code == 400
        assert "not a duration" in bad.text
        missing = await http.get("/consumers/nobody")
        assert missing.status_code == 404
        chart = await http.get("/fragments/chart/email")
        assert chart.status_code == 200
        assert "<svg" in chart.text
        assert 'data-total="completed">2<' in chart.text


async def test_paging_walks_every_task_once(app: kanthorq.App, db: asyncpg.Connection) -> None:
    await arrange(app, db)
    ids = await app.publish_many([(f"order.n{i}", b"{}") for i in range(120)])
    from tests.conftest import converted, registry
    from tests.dashboard_data import SPEC

    await converted(await registry(app.pool, app.dsn).consumer(SPEC), app.pool, 1000)
    seen: list[str] = []
    async with client(dashboard.app(app)) as http:
        url = "/consumers/email?state=available"
        while url:
            page = await http.get(url)
            seen += re.findall(r'<tr data-event="([^"]+)"', page.text)
            found = re.search(r'id="next-page" href="\?([^"]+)"', page.text)
            url = "/consumers/email?" + found.group(1).replace("&amp;", "&") if found else ""
    assert len(seen) == len(set(seen)) == 123
    assert set(ids) <= set(seen)
    assert seen == sorted(seen, reverse=True)


async def test_task_page_shows_errors_tracebacks_go_records_and_the_event(
    app: kanthorq.App, db: asyncpg.Connection
) -> None:
    arranged = await arrange(app, db)
    async with client(dashboard.app(app)) as http:
        page = await http.get(f"/consumers/email/tasks/{arranged.ids['failing']}")
        go = await http.get(f"/consumers/email/tasks/{arranged.ids['go']}")
        missing = await http.get("/consumers/email/tasks/event_nope")
    assert page.status_code == 200
    assert "raise ValueError(&#34;payment gateway said no&#34;)" in page.text
    assert '<pre id="event-body">{\n  &#34;order_id&#34;: &#34;failing&#34;,' in page.text
    assert "not numbered (a KanthorQ for Go record)" in go.text
    assert "main.go:42" in go.text
    assert missing.status_code == 404


async def test_everything_shown_is_escaped(app: kanthorq.App, db: asyncpg.Connection) -> None:
    arranged = await arrange(app, db)
    async with client(dashboard.app(app)) as http:
        task = await http.get(f"/consumers/email/tasks/{arranged.ids['injected']}")
        listing = await http.get("/consumers/email")
    for page in (task.text, listing.text):
        assert "<script>window" not in page
        assert "<img/src" not in page
        assert "&lt;img/src=x/onerror=window.__kq_pwned=1//" in page
    assert "&lt;script&gt;window.__kq_pwned = 2&lt;/script&gt;" in task.text
    assert "&lt;script&gt;window.__kq_pwned = 3&lt;/script&gt;" in task.text
    assert "<b>key</b>" not in task.text
    assert "&lt;b&gt;key&lt;/b&gt;" in task.text


async def test_read_only_without_a_token_refuses_every_action(
    app: kanthorq.App, db: asyncpg.Connection
) -> None:
    arranged = await arrange(app, db)
    async with client(dashboard.app(app)) as http:
        page = await http.get("/consumers/email")
        assert 'name="event_id"' not in page.text  # no selection boxes, no action forms
        refused = await http.post(
            "/consumers/email/tasks",
            data={"op": "cancel", "target": "selected", "event_id": arranged.ids["wait1"]},
        )
        dropped = await http.post("/consumers/email/drop", data={"confirm": "email"})
    assert refused.status_code == dropped.status_code == 403
    assert "read-only" in refused.text
    assert await states(db, arranged.table, [arranged.ids["wait1"]]) == ["available"]


async def test_with_a_token_every_request_needs_it_and_actions_need_csrf(
    app: kanthorq.App, db: asyncpg.Connection
) -> None:
    arranged = await arrange(app, db)
    web = dashboard.app(app, token=TOKEN)
    async with client(web) as anonymous:
        page = await anonymous.get("/consumers/email")
        assert page.status_code == 303
        assert "/login?next=%2Fconsumers%2Femail" in page.headers["location"]
        fragment = await anonymous.get("/fragments/overview", headers={"HX-Request": "true"})
        assert fragment.status_code == 401
        wrong = await anonymous.post("/login", data={"token": "guess"})
        assert wrong.status_code == 401
        action = await anonymous.post(
            "/consumers/email/tasks",
            data={"op": "cancel", "target": "selected", "event_id": arranged.ids["wait1"]},
        )
        assert action.status_code == 401
        signed = await anonymous.post("/login", data={"token": TOKEN, "next": "/consumers/email"})
        assert signed.status_code == 303
        assert signed.headers["location"] == "/consumers/email"
        cookie = signed.cookies[COOKIE]
        assert TOKEN not in signed.headers["set-cookie"]  # derived from it, not the secret
        assert "httponly" in signed.headers["set-cookie"].lower()
        assert "samesite=strict" in signed.headers["set-cookie"].lower()
    async with client(web, cookie) as http:
        page = await http.get("/consumers/email")
        assert page.status_code == 200
        assert "read-only" not in page.text
        data = {"op": "cancel", "target": "selected", "event_id": arranged.ids["wait1"]}
        no_csrf = await http.post("/consumers/email/tasks", data=data)
        assert no_csrf.status_code == 403
        bad_csrf = await http.post("/consumers/email/tasks", data=data | {"csrf": "0" * 64})
        assert bad_csrf.status_code == 403
        assert await states(db, arranged.table, [arranged.ids["wait1"]]) == ["available"]
        done = await http.post("/consumers/email/tasks", data=data | {"csrf": csrf_of(page.text)})
        assert done.status_code == 200
        assert 'data-field="updated">1<' in done.text
    assert await states(db, arranged.table, [arranged.ids["wait1"]]) == ["cancelled"]
    async with client(web) as bearer:
        page = await bearer.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
        assert page.status_code == 200


async def test_actions_on_a_selection_and_a_filter_say_what_changed_and_what_was_left(
    app: kanthorq.App, db: asyncpg.Connection
) -> None:
    arranged = await arrange(app, db)
    ids = arranged.ids
    async with client(dashboard.app(app, token=TOKEN), SESSION) as http:
        csrf = csrf_of((await http.get("/consumers/email")).text)
        chosen = [ids["wait1"], ids["wait2"], ids["ok1"]]
        cancel = await http.post(
            "/consumers/email/tasks",
            data={"op": "cancel", "target": "selected", "event_id": chosen, "csrf": csrf},
        )
        assert 'data-field="updated">2<' in cancel.text
        assert (
            '<li data-reason="wrong state (completed)"><b>1</b> wrong state (completed)</li>'
            in cancel.text
        )
        assert await states(db, arranged.table, chosen) == ["cancelled", "cancelled", "completed"]
        resume = await http.post(
            "/consumers/email/tasks",
            data={"op": "resume", "target": "filter", "state": "cancelled", "csrf": csrf},
        )
        assert 'data-field="updated">2<' in resume.text
        assert await states(db, arranged.table, chosen) == ["available", "available", "completed"]
        retry = await http.post(
            "/consumers/email/tasks",
            data={"op": "retry", "target": "filter", "subject": "order.failing", "csrf": csrf},
        )
        assert 'data-field="updated">1<' in retry.text
        rerun = await http.post(
            "/consumers/email/tasks",
            data={
                "op": "rerun",
                "target": "selected",
                "event_id": ids["gone"],
                "csrf": csrf,
                "from": "task",
            },
        )
        assert 'data-field="updated">1<' in rerun.text
        assert f"/consumers/email/tasks/{ids['gone']}" in rerun.text  # back to the task
        nothing = await http.post(
            "/consumers/email/tasks", data={"op": "cancel", "target": "selected", "csrf": csrf}
        )
        assert nothing.status_code == 400
    assert await states(db, arranged.table, [ids["failing"], ids["gone"]]) == [
        "available",
        "available",
    ]


async def test_replay_and_drops_behind_typed_confirmation(
    app: kanthorq.App, db: asyncpg.Connection
) -> None:
    await arrange(app, db)
    async with client(dashboard.app(app, token=TOKEN), SESSION) as http:
        csrf = csrf_of((await http.get("/consumers/email")).text)
        replay = await http.post("/consumers/email/replay", data={"since": "1h", "csrf": csrf})
        assert replay.status_code == 200
        assert "cursor_before" in replay.text
        bad = await http.post("/consumers/email/replay", data={"since": "later", "csrf": csrf})
        assert bad.status_code == 400
        wrong = await http.post("/consumers/email/drop", data={"confirm": "emai", "csrf": csrf})
        assert wrong.status_code == 400
        assert "type the consumer" in wrong.text
        assert await db.fetchval("SELECT count(*) FROM kanthorq_consumer_registry") == 1
        drop = await http.post("/consumers/email/drop", data={"confirm": "email", "csrf": csrf})
        assert drop.status_code == 200
        assert 'data-field="deleted">1<' in drop.text
        assert await db.fetchval("SELECT count(*) FROM kanthorq_consumer_registry") == 0
        wrong = await http.post("/streams/default/drop", data={"confirm": "x", "csrf": csrf})
        assert wrong.status_code == 400
        drop = await http.post("/streams/default/drop", data={"confirm": "default", "csrf": csrf})
        assert drop.status_code == 200
    assert await db.fetchval("SELECT count(*) FROM kanthorq_stream_registry") == 0


async def test_mounted_under_a_prefix_its_links_keep_the_prefix(
    app: kanthorq.App, db: asyncpg.Connection
) -> None:
    await arrange(app, db)
    outer = FastAPI()
    outer.mount("/ops/queue", dashboard.app(app, token=TOKEN))
    async with client(outer) as http:
        login = await http.get("/ops/queue/consumers/email")
        assert login.headers["location"].startswith("http://dash/ops/queue/login?next=")
        signed = await http.post("/ops/queue/login", data={"token": TOKEN})
        assert "path=/ops/queue/" in signed.headers["set-cookie"].lower()
        http.cookies.set(COOKIE, signed.cookies[COOKIE])
        page = await http.get("/ops/queue/")
    assert page.status_code == 200
    assert 'href="http://dash/ops/queue/consumers/email"' in page.text
    assert 'src="http://dash/ops/queue/static/htmx.min.js"' in page.text
    assert 'hx-get="http://dash/ops/queue/fragments/overview"' in page.text


async def test_schedules_page_lists_last_and_next_ticks(
    app: kanthorq.App, db: asyncpg.Connection
) -> None:
    async with client(dashboard.app(app)) as http:
        empty = await http.get("/schedules")
        assert empty.status_code == 200
        assert "No schedules" in empty.text
        next_tick = await db.fetchval("SELECT kanthorq_now_ms() + 3600000")
        await db.execute(
            load("schedule_register"),
            "nightly",
            "default",
            "report.nightly",
            "0 3 * * *",
            next_tick,
        )
        page = await http.get("/schedules")
    row = page.text[page.text.index('data-schedule="nightly"') :]
    assert "report.nightly" in row
    assert "0 3 * * *" in row
    assert "(in 59m" in row  # the next tick, an hour away
    assert "ago)" in row  # the last: registered just now


async def test_activity_counts_each_minute_and_the_stream_rate(
    app: kanthorq.App, db: asyncpg.Connection
) -> None:
    await arrange(app, db)
    activity = await app.admin.activity("email", minutes=60)
    assert sum(activity.completed) == 2
    assert sum(activity.discarded) == 1
    # failing's error, go's, the injected task's, and gone's first of two (its last discarded it)
    assert sum(activity.retried) == 4
    assert activity.complete
    assert activity.failures == 5
    assert activity.completed[-3:] != [0, 0, 0]  # the last minutes, not the first
    rate = await app.admin.stream_rate("default", seconds=300)
    assert rate.events == 9
    assert rate.complete


def test_cli_refuses_a_public_host_without_a_token(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["dashboard", "--dsn", "postgresql://nobody@127.0.0.1:1/x", "--host", "0.0.0.0"])
    assert code == 2
    assert "without a token" in capsys.readouterr().err


NO_EXTRA = """
import sys

sys.modules["starlette"] = None  # as if not installed: importing it fails
import kanthorq
import kanthorq.cli

print("loaded", sorted(m for m in sys.modules if m.startswith(("jinja2", "uvicorn"))))
try:
    import kanthorq.dashboard
except ImportError as exc:
    print(type(exc).__name__, exc)
print("exit", kanthorq.cli.main(["dashboard", "--dsn", "postgresql://nobody@127.0.0.1:1/x"]))
"""


def test_without_the_extra_it_says_what_to_install() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", NO_EXTRA], capture_output=True, text=True, timeout=60, check=False
    )
    lines = proc.stdout.splitlines()
    assert lines[0] == "loaded []"  # the CLI imports no part of the extra
    assert lines[1] == (
        "MissingExtra Dashboard pages need the starlette package, which is not installed: "
        "pip install 'kanthorq[dashboard]'"
    ), proc.stderr
    assert lines[2:] == ["exit 1"]
    assert "pip install 'kanthorq[dashboard]'" in proc.stderr


def test_a_newest_first_list_with_an_age_starts_at_the_ids_of_that_age() -> None:
    now = 1_800_000_000_000
    aged = present.listing([], None, "2h", None, None)
    start = present.start_of(aged, now)
    assert start == event_id_at(now - 7_200_000 + present.AGE_MARGIN_MS)
    assert present.start_of(present.listing([], None, "2h", "oldest", None), now) is None
    assert present.start_of(present.listing(["retryable"], None, None, None, None), now) is None


async def test_a_listing_that_takes_too_long_says_how_to_narrow_it(
    app: kanthorq.App, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    await arrange(app, db)
    monkeypatch.setattr(present, "LIST_TIMEOUT", 1e-6)
    async with client(dashboard.app(app)) as http:
        page = await http.get("/consumers/email", params={"subject": "user.created"})
        again = await http.get("/consumers/email")  # the pool's connections still work
    assert page.status_code == 200
    assert 'id="slow"' in page.text
    assert again.status_code == 200
