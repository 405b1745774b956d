"""The dashboard in a real headless Chromium (Selenium and chromedriver): the overview
against the database, a failing task's traceback, cancelling and resuming a selection, the
overview refreshing itself, injection rendered as text, and the token.

The server is ``kanthorq dashboard``'s (uvicorn, in a thread with its own event loop and
app). They skip, saying why, where chromium or chromedriver is missing (``.ci/run`` installs
them). With ``KANTHORQ_SCREENSHOTS=docs`` they save the README's screenshots there.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

import kanthorq
from tests.dashboard_data import INJECTED_SUBJECT, arrange, states

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver)",
)
TOKEN = "browser-test-token"
AppFactory = Callable[..., kanthorq.App]

if CHROMIUM is not None and CHROMEDRIVER is not None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import Select, WebDriverWait


class Served:
    """``kanthorq dashboard``'s server on a free port, in a thread of its own."""

    def __init__(self, dsn: str, token: str | None) -> None:
        from kanthorq.dashboard.serve import bound_socket, server, standalone

        kq = kanthorq.App(dsn, migrate=False, pool_size=2)
        self.sock = bound_socket("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = server(standalone(kq, token, refresh=1.0), "127.0.0.1", 0)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.sock]))

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive(), "the dashboard's server stopped"
            assert time.monotonic() < deadline, "the dashboard's server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)
        self.sock.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1360,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
async def app(make_app: AppFactory) -> AsyncIterator[kanthorq.App]:
    async with make_app() as opened:
        yield opened


@pytest.fixture
def served(dsn: str) -> Iterator[Served]:
    with Served(dsn, TOKEN) as running:
        yield running


def sign_in(driver: WebDriver, served: Served, path: str = "/") -> None:
    driver.delete_all_cookies()
    driver.get(served.url + path)
    driver.find_element(By.NAME, "token").send_keys(TOKEN)
    driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
    WebDriverWait(driver, 10).until(lambda d: "/login" not in d.current_url)


def screenshot(driver: WebDriver, name: str) -> None:
    folder = os.environ.get("KANTHORQ_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1360, max(600, min(int(height) + 140, 1800)))
        driver.save_screenshot(str(Path(folder) / name))
        driver.set_window_size(1360, 900)


def result_count(driver: WebDriver) -> str:
    """The count of an action's result page, once it shows."""
    found = WebDriverWait(driver, 10).until(
        lambda d: (
            d.find_elements(By.CSS_SELECTOR, '#result [data-field="updated"]')
            or d.find_elements(By.ID, "problem")
        )
    )
    assert found[0].get_attribute("data-field") == "updated", found[0].text
    return str(found[0].text)


def cell(driver: WebDriver, row: str, field: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, f'{row} [data-field="{field}"]').text)


async def test_overview_shows_what_the_database_holds(
    app: kanthorq.App, db: asyncpg.Connection, served: Served, browser: WebDriver
) -> None:
    arranged = await arrange(app, db)
    sign_in(browser, served)
    counts = dict(await db.fetch(f"SELECT state, count(*) FROM {arranged.table} GROUP BY state"))
    events = await db.fetchval(
        'SELECT count(*) FROM "kanthorq_'
        + (await db.fetchval("SELECT id FROM kanthorq_stream_registry WHERE name = 'default'"))
        + '"'
    )
    row = '[data-consumer="email"]'
    assert cell(browser, '[data-stream="default"]', "events") == str(events)
    for code, name in (
        (101, "completed"),
        (102, "retryable"),
        (1, "available"),
        (-102, "discarded"),
    ):
        assert cell(browser, row, name) == str(counts[code]), name
    assert cell(browser, row, "failures") == "5"
    assert browser.find_elements(By.ID, "read-only") == []
    screenshot(browser, "dashboard-overview.png")


async def test_the_overview_refreshes_itself_without_reloading(
    app: kanthorq.App, db: asyncpg.Connection, served: Served, browser: WebDriver
) -> None:
    await arrange(app, db)
    sign_in(browser, served)
    browser.execute_script("window.__kq_same_page = true")
    before = cell(browser, '[data-stream="default"]', "events")
    await app.publish_many([(f"order.more{i}", b"{}") for i in range(5)])
    WebDriverWait(browser, 15).until(
        lambda d: cell(d, '[data-stream="default"]', "events") == str(int(before) + 5)
    )
    assert browser.execute_script("return window.__kq_same_page") is True  # not reloaded


async def test_a_failing_task_shows_its_traceback(
    app: kanthorq.App, db: asyncpg.Connection, served: Served, browser: WebDriver
) -> None:
    arranged = await arrange(app, db)
    sign_in(browser, served, "/consumers/email")
    browser.find_element(By.LINK_TEXT, arranged.ids["failing"]).click()
    traceback = browser.find_element(By.CSS_SELECTOR, "pre.traceback").text
    assert 'raise ValueError("payment gateway said no")' in traceback
    assert browser.find_element(By.ID, "task-state").text == "retryable"
    assert '"order_id": "failing"' in browser.find_element(By.ID, "event-body").text
    screenshot(browser, "dashboard-task.png")


async def test_cancel_and_resume_a_selection(
    app: kanthorq.App, db: asyncpg.Connection, served: Served, browser: WebDriver
) -> None:
    arranged = await arrange(app, db)
    chosen = [arranged.ids["wait1"], arranged.ids["wait2"]]
    sign_in(browser, served, "/consumers/email?state=available")
    for event_id in chosen:
        browser.find_element(By.CSS_SELECTOR, f'input[value="{event_id}"]').click()
    Select(browser.find_element(By.NAME, "op")).select_by_value("cancel")
    browser.find_element(By.ID, "act-selected").click()
    assert result_count(browser) == "2"
    assert await states(db, arranged.table, [*chosen, arranged.ids["wait3"]]) == [
        "cancelled",
        "cancelled",
        "available",
    ]
    browser.get(served.url + "/consumers/email?state=cancelled")
    Select(browser.find_element(By.NAME, "op")).select_by_value("resume")
    browser.find_element(By.ID, "act-filter").click()
    assert result_count(browser) == "2"
    assert await states(db, arranged.table, chosen) == ["available", "available"]


async def test_injection_attempts_render_as_text(
    app: kanthorq.App, db: asyncpg.Connection, served: Served, browser: WebDriver
) -> None:
    arranged = await arrange(app, db)
    sign_in(browser, served, f"/consumers/email/tasks/{arranged.ids['injected']}")
    subject = browser.find_element(By.ID, "event-subject")
    assert subject.text == INJECTED_SUBJECT
    assert subject.find_elements(By.XPATH, "./*") == []  # text, no element
    assert (
        "<script>window.__kq_pwned = 2</script>" in browser.find_element(By.ID, "event-body").text
    )
    message = browser.find_element(By.CSS_SELECTOR, ".error-record .message")
    assert message.text.startswith("<script>window.__kq_pwned = 3</script>")
    assert message.find_elements(By.XPATH, "./*") == []
    browser.get(served.url + "/consumers/email")
    assert browser.find_elements(By.CSS_SELECTOR, "td.subject img") == []
    assert browser.execute_script("return window.__kq_pwned") is None


async def test_without_the_token_requests_are_refused(
    app: kanthorq.App, db: asyncpg.Connection, served: Served, browser: WebDriver
) -> None:
    arranged = await arrange(app, db)
    browser.delete_all_cookies()
    browser.get(served.url + "/consumers/email")
    assert "/login" in browser.current_url
    assert browser.find_elements(By.CSS_SELECTOR, "tr[data-event]") == []
    browser.find_element(By.NAME, "token").send_keys("not-the-token")
    browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
    assert "not the dashboard's token" in browser.find_element(By.ID, "problem").text
    status = browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const body = new URLSearchParams(
            {op: "cancel", target: "selected", event_id: arguments[0]});
        fetch("/consumers/email/tasks", {method: "POST", body}).then(r => done(r.status));
        """,
        arranged.ids["wait1"],
    )
    assert status == 401
    assert await states(db, arranged.table, [arranged.ids["wait1"]]) == ["available"]


async def test_read_only_without_a_token_says_so(
    app: kanthorq.App, db: asyncpg.Connection, dsn: str, browser: WebDriver
) -> None:
    await arrange(app, db)
    with Served(dsn, None) as open_server:
        browser.delete_all_cookies()
        browser.get(open_server.url + "/consumers/email")
        assert "read-only" in browser.find_element(By.ID, "read-only").text
        assert browser.find_elements(By.ID, "tasks-form") != []
        assert browser.find_elements(By.ID, "act-selected") == []
