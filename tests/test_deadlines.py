"""The deadline timer (issue 17.6): it wakes at the next deadline, not at a periodic job's next tick, and a
deadline set while it sleeps (a new proposal) re-arms it."""

from __future__ import annotations

import asyncio

from bot.errors import StoreError
from bot.flow.deadlines import DeadlineTimer
from tests.fakes.world import ShiftedClock
from tests.helpers import until


async def test_expiry_lagged_up_to_30_s_because_a_job_ran_every_30_s() -> None:
    clock = ShiftedClock()
    deadlines: list[float] = []
    fired: list[float] = []

    async def due() -> None:
        now = clock.now()
        fired.append(now)
        deadlines[:] = [d for d in deadlines if d > now]

    timer = DeadlineTimer(clock, lambda: min(deadlines, default=None), due, recheck_s=30.0)
    task = asyncio.get_running_loop().create_task(timer.run())
    try:
        await asyncio.sleep(0.05)  # asleep with nothing due: it would look again in 30 s
        first = clock.now() + 0.3
        deadlines.append(first)
        timer.changed()
        await until(lambda: fired, 5, "the deadline handled")
        assert 0 <= fired[0] - first < 0.25
        second = clock.now() + 0.2
        deadlines.append(second)
        timer.changed()
        await until(lambda: len(fired) == 2, 5, "the second deadline handled")
        assert 0 <= fired[1] - second < 0.25
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_deadline_whose_handling_fails_is_tried_again_without_a_busy_loop() -> None:
    clock = ShiftedClock()
    calls: list[float] = []
    deadline = clock.now()

    async def due() -> None:
        calls.append(clock.now())
        if len(calls) == 1:
            raise StoreError("the store is busy")

    timer = DeadlineTimer(clock, lambda: deadline if len(calls) < 2 else None, due, recheck_s=30.0)
    task = asyncio.get_running_loop().create_task(timer.run())
    try:
        await until(lambda: len(calls) == 2, 5, "a second attempt")
        assert calls[1] - calls[0] >= 0.9  # RETRY_S later, not at once
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
