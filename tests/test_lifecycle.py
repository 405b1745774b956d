"""The app's life: starting, stopping, running again, in one or several event loops."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

import kanthorq
from kanthorq.errors import ConfigError
from tests.conftest import wait_until


def _app_with_consumer(make_app: Callable[..., kanthorq.App]) -> kanthorq.App:
    app = make_app()

    @app.subscribe("a", consumer="c")
    async def handler(msg: kanthorq.Message) -> None: ...

    return app


@pytest.mark.parametrize("delay", [0.0, 0.001, 0.01])
async def test_shutdown_soon_after_start_returns(
    make_app: Callable[..., kanthorq.App], delay: float
) -> None:
    """A shutdown while the listener is still connecting must not be lost."""
    app = _app_with_consumer(make_app)
    run = asyncio.create_task(app.run())
    await wait_until(lambda: app.listener is not None, interval=0.0005)
    await asyncio.sleep(delay)  # land the shutdown while the listener connects
    await app.shutdown()
    await asyncio.wait_for(run, 10)


async def test_shutdown_before_start_returns(make_app: Callable[..., kanthorq.App]) -> None:
    app = _app_with_consumer(make_app)
    run = asyncio.create_task(app.run())
    await asyncio.sleep(0)
    await app.shutdown()
    await asyncio.wait_for(run, 10)


async def test_a_second_concurrent_run_is_refused(
    make_app: Callable[..., kanthorq.App],
) -> None:
    app = _app_with_consumer(make_app)
    run = asyncio.create_task(app.run())
    try:
        await wait_until(lambda: app.listener is not None and app.listener.connected.is_set())
        with pytest.raises(ConfigError, match="running already"):
            await app.run()
    finally:
        await app.shutdown()
        await asyncio.wait_for(run, 10)


def test_an_app_runs_in_one_event_loop_then_another(
    make_app: Callable[..., kanthorq.App],
) -> None:
    app = _app_with_consumer(make_app)
    errors: list[BaseException] = []

    async def run_briefly() -> None:
        async with app:
            await app.publish("a")
        run = asyncio.create_task(app.run())
        await wait_until(lambda: app.listener is not None and app.listener.connected.is_set())
        await app.shutdown()
        await asyncio.wait_for(run, 10)

    def in_a_new_loop() -> None:
        try:
            asyncio.run(run_briefly())
        except BaseException as exc:
            errors.append(exc)

    # each in a thread of its own: this test already runs inside pytest's event loop
    for _ in range(2):
        thread = threading.Thread(target=in_a_new_loop)
        thread.start()
        thread.join(30)
        assert not thread.is_alive(), "run() in a second event loop did not return"
    assert errors == []
