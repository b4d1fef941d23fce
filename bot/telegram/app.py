"""The python-telegram-bot Application, run with the manual lifecycle inside the daemon's own loop.

`start` returns at once: a background task keeps trying `initialize → start → start_polling` with
backoff while Telegram is unreachable, so log scanning never waits on Telegram. Every outgoing call goes
through `send`, which spaces calls per chat (Telegram allows about one message a second per chat) and
honours 429 `retry_after`.
"""

from __future__ import annotations

import asyncio
import datetime as dtm
import logging
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from telegram.error import BadRequest, Forbidden, InvalidToken, NetworkError, RetryAfter, TelegramError
from telegram.ext import Application, ContextTypes
from telegram.warnings import PTBDeprecationWarning

from bot.errors import HealbotError
from bot.telegram.polling import ObservedRequest, PollingLog

log = logging.getLogger("healbot.telegram")

T = TypeVar("T")

TELEGRAM_API = "https://api.telegram.org/bot"
MAX_RETRY_AFTER_S = 300.0
STOP_TIMEOUT_S = 30.0  # for the updater, the application and the HTTP client to shut down


class TelegramUnavailable(HealbotError):
    """Telegram could not be reached (network, 5xx, not started yet); the caller keeps the message."""


class TelegramRejected(HealbotError):
    """Telegram refused the call for good (400/403); retrying the same call cannot help."""


@dataclass(frozen=True, slots=True)
class AppSettings:
    token: str
    base_url: str | None = None  # e.g. http://127.0.0.1:PORT/bot for a local Bot API server
    poll_timeout_s: float = 10.0
    min_chat_interval_s: float = 1.0
    backoff_start_s: float = 0.5
    backoff_max_s: float = 30.0


def file_url_for(base_url: str) -> str:
    """`…/bot` → `…/file/bot`, the way Telegram lays out file downloads."""
    root = base_url.rstrip("/")
    return root[: -len("/bot")] + "/file/bot" if root.endswith("/bot") else root + "/file/bot"


def build_application(settings: AppSettings, polling: PollingLog) -> Application:  # type: ignore[type-arg]
    builder = Application.builder().token(settings.token).job_queue(None).concurrent_updates(False)
    if settings.base_url:
        builder = builder.base_url(settings.base_url).base_file_url(file_url_for(settings.base_url))
    builder = builder.get_updates_request(
        ObservedRequest(polling, connection_pool_size=1, read_timeout=settings.poll_timeout_s + 10.0)
    )
    return builder.build()


class ChatPacer:
    """At most one call per `interval_s` per chat; waits instead of hitting Telegram's flood limit."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._locks: dict[int, asyncio.Lock] = {}
        self._last: dict[int, float] = {}

    async def wait(self, chat_id: int) -> asyncio.Lock:
        lock = self._locks.setdefault(chat_id, asyncio.Lock())
        await lock.acquire()
        loop = asyncio.get_running_loop()
        last = self._last.get(chat_id)
        if last is not None:
            delay = self.interval_s - (loop.time() - last)
            if delay > 0:
                await asyncio.sleep(delay)
        return lock

    def done(self, chat_id: int, lock: asyncio.Lock) -> None:
        self._last[chat_id] = asyncio.get_running_loop().time()
        lock.release()


def _retry_after_s(exc: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB 22 warns that the type will become a timedelta
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


class TelegramApp:
    def __init__(self, settings: AppSettings) -> None:
        self.settings = settings
        # PTB logs every unreadable answer (a proxy's 502 page) with a traceback, then raises it as a
        # NetworkError, which `send` and `PollingLog` report in one line each: its own lines are noise.
        logging.getLogger("telegram.request").setLevel(logging.CRITICAL)
        self.polling = PollingLog()
        self.application = build_application(settings, self.polling)
        self.pacer = ChatPacer(settings.min_chat_interval_s)
        self.ready = asyncio.Event()
        self._starter: asyncio.Task[None] | None = None
        self._on_ready: Callable[[], Awaitable[None]] | None = None
        self.start_attempts = 0

    @property
    def bot(self):  # type: ignore[no-untyped-def]
        return self.application.bot

    async def start(self, on_ready: Callable[[], Awaitable[None]] | None = None) -> None:
        """Begin connecting in the background; returns immediately."""
        self._on_ready = on_ready
        self.application.add_error_handler(self._on_error)
        self._starter = asyncio.get_running_loop().create_task(
            self._start_with_backoff(), name="telegram-start"
        )

    async def _start_with_backoff(self) -> None:
        delay = self.settings.backoff_start_s
        app = self.application
        while True:
            self.start_attempts += 1
            try:
                await app.initialize()
                if not app.running:
                    await app.start()
                updater = app.updater
                if updater is not None and not updater.running:
                    await updater.start_polling(
                        timeout=int(self.settings.poll_timeout_s),
                        allowed_updates=["message", "callback_query"],
                        error_callback=self.polling.failed,
                    )
                break
            except InvalidToken:
                log.error("Telegram rejected the bot token (HEALBOT_TELEGRAM_TOKEN); the chat stays off")
                return
            except (NetworkError, RetryAfter) as exc:
                log.warning("Telegram unreachable (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.backoff_max_s)
        self.ready.set()
        log.info("Telegram connected after %d attempt(s)", self.start_attempts)
        if self._on_ready is not None:
            await self._on_ready()

    async def stop(self) -> None:
        if self._starter is not None:
            self._starter.cancel()
            await asyncio.gather(self._starter, return_exceptions=True)
            self._starter = None
        app = self.application
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):  # a SIGTERM must not wait on Telegram for ever
                if app.updater is not None and app.updater.running:
                    await app.updater.stop()
                if app.running:
                    await app.stop()
                await app.shutdown()
        except TelegramError as exc:
            log.warning("Telegram shutdown: %s", exc)
        except TimeoutError:
            log.warning("Telegram shutdown did not finish within %g s; going on without it", STOP_TIMEOUT_S)
        self.ready.clear()

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        error = context.error
        if isinstance(error, NetworkError) and not isinstance(error, BadRequest):
            log.info("Telegram network trouble: %s", error)
            return
        log.error("error while handling a Telegram update: %s", error, exc_info=error)

    async def send(self, chat_id: int, call: Callable[[], Awaitable[T]], *, retries: int = 3) -> T:
        """Run one Bot API call for `chat_id`, paced per chat; sleeps out 429s; maps errors to ours."""
        if not self.ready.is_set():
            raise TelegramUnavailable("Telegram is not connected yet")
        for attempt in range(retries + 1):
            lock = await self.pacer.wait(chat_id)
            try:
                return await call()
            except RetryAfter as exc:
                wait_s = min(_retry_after_s(exc), MAX_RETRY_AFTER_S)
                log.warning("Telegram flood control: waiting %.0f s (chat %s)", wait_s, chat_id)
                if attempt == retries:
                    raise TelegramUnavailable(f"flood control: retry after {wait_s:.0f} s") from exc
                await asyncio.sleep(wait_s)
            except (BadRequest, Forbidden) as exc:
                raise TelegramRejected(exc.message) from exc
            except (NetworkError, TelegramError) as exc:
                raise TelegramUnavailable(str(exc)) from exc
            finally:
                self.pacer.done(chat_id, lock)
        raise TelegramUnavailable("unreachable")  # the loop always returns or raises
