"""Reminders and expiries at their exact time: one timer, set for the next deadline of any pending
proposal and set again whenever deadlines change (a new proposal, a snooze). It also looks again at
least every `recheck_s`, so a deadline it was not told about is late by that much at most."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from bot.errors import HealbotError
from bot.interfaces import Clock

RECHECK_S = 30.0
RETRY_S = 1.0  # a deadline whose handling failed is tried again this much later, not in a busy loop

log = logging.getLogger("healbot.deadlines")


class DeadlineTimer:
    def __init__(
        self,
        clock: Clock,
        next_deadline: Callable[[], float | None],
        due: Callable[[], Awaitable[None]],
        *,
        recheck_s: float = RECHECK_S,
    ) -> None:
        self._clock = clock
        self._next_deadline = next_deadline
        self._due = due
        self._recheck_s = recheck_s
        self._changed = asyncio.Event()

    def changed(self) -> None:
        self._changed.set()

    async def run(self) -> None:
        handled: float | None = None
        while True:
            self._changed.clear()
            deadline = self._next_deadline()
            wait = self._recheck_s if deadline is None else deadline - self._clock.now()
            if wait <= 0 and deadline != handled:
                handled = deadline
                try:
                    await self._due()
                except HealbotError as exc:
                    log.error("reminders and expiries not handled: %s", exc)
                continue
            if wait <= 0:
                wait = RETRY_S  # handled once and still due: the store refused; not a busy loop
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(wait, self._recheck_s))
            handled = None
