"""The updates poll's health in the log: one line when it starts failing, one when the failure changes,
one when it works again — never a traceback per failed poll during an outage.

PTB retries a failed `getUpdates` itself, backing off ×1.5 up to 30 s; its default error callback logs a
full traceback each time. `PollingLog.failed` replaces that callback, and `ObservedRequest` (the HTTP
client of `getUpdates` only) reports the first answer after an outage.
"""

from __future__ import annotations

import logging
from typing import Any

from telegram.error import TelegramError
from telegram.request import HTTPXRequest

log = logging.getLogger("healbot.telegram")


class PollingLog:
    def __init__(self) -> None:
        self.failing: str | None = None  # the current failure, None while polling works
        self.failures = 0

    def failed(self, exc: TelegramError) -> None:
        """PTB's `error_callback`: synchronous, must not raise."""
        said = f"{type(exc).__name__}: {exc}"
        kind = f"{type(exc).__name__}: {str(exc).split('.')[0]}"  # the same failure, whatever body came
        self.failures += 1
        if self.failing is None:
            log.warning(
                "Telegram polling failed (%s); retrying with backoff (up to 30 s); logged again when "
                "it changes or works again",
                said,
            )
        elif kind != self.failing:
            log.warning("Telegram polling still fails, now with %s", said)
        self.failing = kind

    def answered(self) -> None:
        if self.failing is None:
            return
        log.warning("Telegram polling works again after %d failed attempt(s)", self.failures)
        self.failing = None
        self.failures = 0


class ObservedRequest(HTTPXRequest):
    """The `getUpdates` client: tells `polling` when Telegram answers with 200 again."""

    def __init__(self, polling: PollingLog, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._polling = polling

    async def do_request(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        code, payload = await super().do_request(*args, **kwargs)
        if code == 200:
            self._polling.answered()
        return code, payload
