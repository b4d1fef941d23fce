"""BackgroundTasks and cancel_and_wait: failures are logged, and a shutdown never hangs on a stuck task."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from bot.tasks import BackgroundTasks, cancel_and_wait

log = logging.getLogger("test.tasks")


async def test_a_failing_task_is_logged_not_lost(caplog: pytest.LogCaptureFixture) -> None:
    tasks = BackgroundTasks(log, "job")

    async def boom() -> None:
        raise ValueError("kaput")

    tasks.spawn(boom(), "boom")
    await tasks.wait_idle()
    assert "job boom failed" in caplog.text and "kaput" in caplog.text
    assert not tasks


async def test_a_task_that_ignores_cancel_does_not_hang_the_shutdown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Regression: a Telegram e2e teardown hung for 120 s on a stop that waited on tasks without a bound."""
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)

    async def polite() -> None:
        await asyncio.sleep(3600)

    tasks = BackgroundTasks(log, "job")
    tasks.spawn(stubborn(), "stubborn-one")
    tasks.spawn(polite(), "polite-one")
    await asyncio.sleep(0)
    await tasks.cancel_all(grace_s=0.2)
    assert "job stubborn-one did not end within 0.2 s of being cancelled" in caplog.text
    assert "stubborn" in caplog.text.split("left behind:")[1]  # where it waits
    assert "polite-one" not in caplog.text
    release.set()
    await tasks.cancel_all(grace_s=5)  # let the stubborn one end, so the loop closes clean


async def test_nothing_to_cancel_returns_at_once() -> None:
    await cancel_and_wait([], log, "job", grace_s=0)
