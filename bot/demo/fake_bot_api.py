"""A fake Telegram Bot API server on 127.0.0.1 for driving the real python-telegram-bot over real HTTP.

Bundled in the product for `healbot demo --telegram`, and used by the tests (tests/fakes re-exports it).

It answers in Telegram's exact shapes (see shared notes/telegram.md), long-polls `getUpdates`, and ENFORCES
the limits that catch a bot's bugs: message length (4096, counted after HTML entity parsing), HTML
validity, 64-byte callback_data, callback queries answered exactly once, "message is not modified",
scriptable 429 with `retry_after`, and an outage switch (refused connections or HTTP 502). Every call is
journaled. Helpers inject what a user does: a text message, a command, a reply, a button press.

Several bots (tokens) can share one group, as in a fleet of healbots in one team chat: `add_bot` registers
another token; every bot gets the group's messages, a button press goes only to the bot that sent the
message, and a bot can edit only its own messages and answer only its own callback queries.

This module is the entry point: `FakeBotApi` and every name the product and the tests import. The parts:
fake_bot_records (vocabulary), fake_bot_limits (Telegram's rules), fake_bot_state (what the fake
remembers), fake_bot_methods (the Bot API methods), fake_bot_users (simulated people), fake_bot_http.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bot.demo.fake_bot_http import FakeBotServer, free_port
from bot.demo.fake_bot_limits import (
    MAX_ANSWER_TEXT,
    MAX_CALLBACK_DATA,
    MAX_CAPTION,
    MAX_TEXT,
    parse_text,
    utf16_len,
)
from bot.demo.fake_bot_methods import METHODS, get_updates
from bot.demo.fake_bot_records import (
    BOT_ID,
    BOT_USERNAME,
    DEFAULT_BOT,
    TOKEN,
    ApiError,
    Call,
    FakeBot,
    StoredMessage,
    UserAction,
)
from bot.demo.fake_bot_state import OUTAGE_MODES, FakeBotState
from bot.demo.fake_bot_users import press_button, send_as_user

__all__ = [
    "BOT_ID",
    "BOT_USERNAME",
    "DEFAULT_BOT",
    "MAX_ANSWER_TEXT",
    "MAX_CALLBACK_DATA",
    "MAX_CAPTION",
    "MAX_TEXT",
    "TOKEN",
    "ApiError",
    "Call",
    "FakeBot",
    "FakeBotApi",
    "StoredMessage",
    "UserAction",
    "free_port",
    "parse_text",
    "utf16_len",
    "wait_until",
]

T = TypeVar("T")
_SENDING_METHODS = {"sendMessage", "sendDocument", "editMessageText", "editMessageReplyMarkup"}


def wait_until(
    condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Poll `condition` until it returns a truthy value; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


@dataclass
class HeldAnswer:
    method: str
    text: str
    reached: threading.Event = field(default_factory=threading.Event)  # the call was carried out
    released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self.released.set()


class FakeBotApi:
    """Start with `start()`, point PTB at `base_url` / `base_file_url`, stop with `stop()`."""

    def __init__(self, *, per_chat_interval_s: float = 0.0) -> None:
        self.port = free_port()
        self._state = FakeBotState(per_chat_interval_s=per_chat_interval_s)
        self._lock = self._state.lock
        self._server = FakeBotServer(self, self.port)
        self._holds: list[HeldAnswer] = []

    def add_bot(self, token: str, bot_id: int, username: str, first_name: str = "healbot") -> FakeBot:
        """Another bot account in the same fake (a second healbot in the group)."""
        bot = FakeBot(token, bot_id, username, first_name)
        with self._lock:
            self._state.add_bot(bot)
        return bot

    @property
    def per_chat_interval_s(self) -> float:
        """Enforce Telegram's ~1 msg/s per chat with 429s when positive."""
        return self._state.per_chat_interval_s

    @per_chat_interval_s.setter
    def per_chat_interval_s(self, seconds: float) -> None:
        with self._lock:
            self._state.per_chat_interval_s = seconds

    @property
    def commands(self) -> list[dict[str, str]]:
        """The default bot's commands, as its last setMyCommands chose them."""
        return self._state.commands

    @property
    def commands_by_bot(self) -> dict[str, list[dict[str, str]]]:
        return self._state.commands_by_bot

    @property
    def down(self) -> str | None:
        """None, "refuse" or "502"."""
        return self._state.down

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> FakeBotApi:
        self._server.serve()
        return self

    def stop(self) -> None:
        with self._lock:
            self._state.closing = True
            self._state.wake_waiters()
            for held in self._holds:
                held.release()
        self._server.unserve()

    def __enter__(self) -> FakeBotApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/bot"

    # --- outage and scripted failures -------------------------------------------------------------

    def go_down(self, mode: str = "refuse") -> None:
        """ "refuse": nothing listens on the port; "502": every call gets a bare HTTP 502 (a proxy's)."""
        if mode not in OUTAGE_MODES:
            raise ValueError(f"unknown outage mode {mode!r}")
        with self._lock:
            self._state.down = mode
            self._state.wake_waiters()  # parked long polls end now
        if mode == "refuse":
            self._server.unserve()

    def come_back(self) -> None:
        with self._lock:
            was = self._state.down
            self._state.down = None
        if was == "refuse":
            self._server.serve()

    def fail_next(
        self,
        method: str,
        code: int = 429,
        *,
        retry_after: int | None = 1,
        times: int = 1,
        description: str = "",
    ) -> None:
        with self._lock:
            self._state.fail_next(method, code, retry_after, times, description)

    # --- the journal ------------------------------------------------------------------------------

    def journal(self) -> list[Call]:
        with self._lock:
            return list(self._state.journal)

    def calls(
        self,
        method: str | None = None,
        *,
        chat_id: int | str | None = None,
        ok: bool | None = None,
        token: str | None = None,
    ) -> list[Call]:
        return [
            c
            for c in self.journal()
            if (method is None or c.method == method)
            and (chat_id is None or c.chat_id == str(chat_id))
            and (ok is None or c.ok == ok)
            and (token is None or c.token == token)
        ]

    def sent_to(self, chat_id: int) -> list[Call]:
        """Every successful call that put or changed something in `chat_id`."""
        return [c for c in self.calls(chat_id=chat_id, ok=True) if c.method in _SENDING_METHODS]

    def message(self, chat_id: int, message_id: int) -> StoredMessage:
        with self._lock:
            return self._state.messages[(chat_id, message_id)]

    def bot_messages(self, chat_id: int, *, token: str | None = None) -> list[StoredMessage]:
        """The bots' messages in `chat_id` (only those of the bot with `token`, when given)."""
        with self._lock:
            return self._state.bot_messages(chat_id, token)

    def wait_for(self, condition: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
        return wait_until(condition, timeout=timeout, what=what or "the fake Bot API journal")

    def wait_for_message(
        self, chat_id: int, contains: str, timeout: float = 15.0, *, after: int = 0
    ) -> StoredMessage:
        def found() -> StoredMessage | None:
            for m in self.bot_messages(chat_id):
                if m.message_id > after and contains in m.text:
                    return m
            return None

        result: StoredMessage = self.wait_for(
            found, timeout, f"a message with {contains!r} in chat {chat_id}"
        )
        return result

    def user_actions(self) -> list[UserAction]:
        with self._lock:
            return list(self._state.actions)

    def unanswered_queries(self) -> list[str]:
        with self._lock:
            return [q for q, answered in self._state.queries.items() if not answered]

    # --- what users do ----------------------------------------------------------------------------

    def user_message(
        self, user_id: int, chat_id: int, text: str, *, reply_to: int | None = None, first_name: str = "User"
    ) -> StoredMessage:
        with self._lock:
            return send_as_user(self._state, user_id, chat_id, text, reply_to=reply_to, first_name=first_name)

    def command(self, user_id: int, chat_id: int, text: str) -> StoredMessage:
        if not text.startswith("/"):
            raise ValueError("a command starts with /")
        return self.user_message(user_id, chat_id, text)

    def reply(self, user_id: int, chat_id: int, to_message_id: int, text: str) -> StoredMessage:
        return self.user_message(user_id, chat_id, text, reply_to=to_message_id)

    def delete(self, chat_id: int, message_id: int) -> None:
        """Someone deleted a message in the chat (an admin tidying up): it is gone for every later call."""
        with self._lock:
            del self._state.messages[(chat_id, message_id)]

    def press(
        self, user_id: int, chat_id: int, message_id: int, *, text: str | None = None, data: str | None = None
    ) -> str:
        """Press the button of a bot message whose label starts with `text` (or whose data is `data`)."""
        with self._lock:
            return press_button(self._state, user_id, chat_id, message_id, text=text, data=data)

    # --- what the HTTP side calls -----------------------------------------------------------------

    def knows_token(self, token: str) -> bool:
        with self._lock:
            return token in self._state.bots

    def handle(self, method: str, params: dict[str, Any], files: dict[str, bytes], token: str = TOKEN) -> Any:
        """Run one Bot API method; return its result or raise ApiError. Called with the lock NOT held."""
        if method == "getUpdates":
            return get_updates(self._state, token, params)
        with self._lock:
            self._state.raise_scripted_failure(method)
            run = METHODS.get(method)
            if run is None:
                raise ApiError(404, "Not Found")
            return run(self._state, self._state.bots[token], params, files)

    def record(self, call: Call) -> None:
        with self._lock:
            self._state.record(call)

    def hold_answer(self, method: str, text_contains: str) -> HeldAnswer:
        """The next `method` call whose text holds `text_contains` is carried out (a message is stored)
        and its answer held until `release()`: a client killed meanwhile never learns what happened."""
        held = HeldAnswer(method, text_contains)
        with self._lock:
            self._holds.append(held)
        return held

    def before_answer(self, method: str, params: dict[str, Any]) -> None:
        """Called by the HTTP side between carrying a call out and answering it."""
        with self._lock:
            held = next(
                (h for h in self._holds if h.method == method and h.text in str(params.get("text", ""))), None
            )
            if held is not None:
                self._holds.remove(held)
        if held is not None:
            held.reached.set()
            held.released.wait(timeout=120)
