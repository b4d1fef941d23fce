"""What the fake Bot API remembers: bots, chats and their messages, update queues, callback queries, what
users did, the journal of calls, and the failures scripted for the next calls.

One `threading.Condition` guards it all; every method here expects `lock` to be held by the caller, and
`lock` is notified whenever something a waiter may want arrives (an update, a journaled call).
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any

from bot.demo.fake_bot_records import DEFAULT_BOT, TOKEN, ApiError, Call, FakeBot, StoredMessage, UserAction

OUTAGE_MODES = ("refuse", "502")


@dataclass
class _ScriptedFailure:
    method: str
    code: int
    description: str
    retry_after: int | None
    times: int


class FakeBotState:
    """The fake's memory; hold `lock` around every use."""

    def __init__(self, *, per_chat_interval_s: float) -> None:
        self.lock = threading.Condition()
        self.per_chat_interval_s = per_chat_interval_s  # enforce Telegram's ~1 msg/s per chat with 429s
        self.bots: dict[str, FakeBot] = {TOKEN: DEFAULT_BOT}
        self.messages: dict[tuple[int, int], StoredMessage] = {}
        self.journal: list[Call] = []
        self.actions: list[UserAction] = []
        self.queries: dict[str, bool] = {}  # callback query id -> answered
        self.commands: list[dict[str, str]] = []
        self.commands_by_bot: dict[str, list[dict[str, str]]] = {}
        self.down: str | None = None  # None or one of OUTAGE_MODES
        self.closing = False
        self._updates: dict[str, list[dict[str, Any]]] = {TOKEN: []}  # per bot token
        self._query_bots: dict[str, str] = {}  # callback query id -> token of the bot it went to
        self._update_ids = itertools.count(1)
        self._message_ids: dict[int, itertools.count[int]] = {}
        self._query_ids = itertools.count(1)
        self._failures: list[_ScriptedFailure] = []
        self._last_send: dict[tuple[str, int], float] = {}

    def add_bot(self, bot: FakeBot) -> None:
        if bot.token in self.bots:
            raise ValueError(f"token {bot.token!r} is registered already")
        self.bots[bot.token] = bot
        self._updates[bot.token] = []

    def wake_waiters(self) -> None:
        self.lock.notify_all()

    # --- messages ---------------------------------------------------------------------------------

    def next_message_id(self, chat_id: int) -> int:
        counter = self._message_ids.setdefault(chat_id, itertools.count(1))
        return next(counter)

    def post(
        self,
        chat_id: int,
        *,
        text: str,
        raw: str,
        sender: FakeBot | None = None,
        from_user: dict[str, Any] | None = None,
        reply_markup: dict[str, Any] | None = None,
        reply_to: int | None = None,
        document: dict[str, Any] | None = None,
        message_id: int | None = None,
    ) -> StoredMessage:
        """Store a new message in `chat_id`, sent by the bot `sender` or else by the person `from_user`."""
        message = StoredMessage(
            chat_id=chat_id,
            message_id=self.next_message_id(chat_id) if message_id is None else message_id,
            from_bot=sender is not None,
            text=text,
            raw=raw,
            reply_markup=reply_markup,
            date=int(time.time()),
            reply_to=reply_to,
            document=document,
            from_user=from_user,
            bot=sender or DEFAULT_BOT,
        )
        self.messages[(chat_id, message.message_id)] = message
        return message

    def bot_messages(self, chat_id: int, token: str | None) -> list[StoredMessage]:
        return sorted(
            (
                m
                for m in self.messages.values()
                if m.chat_id == chat_id and m.from_bot and (token is None or m.bot.token == token)
            ),
            key=lambda m: m.message_id,
        )

    def message_json(self, m: StoredMessage) -> dict[str, Any]:
        chat_type = "private" if m.chat_id > 0 else "group"
        chat: dict[str, Any] = {"id": m.chat_id, "type": chat_type}
        if chat_type == "group":
            chat["title"] = "ops"
        else:
            chat["first_name"] = "User"
        data: dict[str, Any] = {
            "message_id": m.message_id,
            "date": m.date,
            "chat": chat,
            "from": m.bot.user() if m.from_bot else m.from_user,
        }
        if m.document is not None:
            data["document"] = m.document
            if m.text:
                data["caption"] = m.text
        else:
            data["text"] = m.text
        if m.reply_markup:
            data["reply_markup"] = m.reply_markup
        if m.reply_to is not None:
            original = self.messages.get((m.chat_id, m.reply_to))
            if original is not None:
                data["reply_to_message"] = self.message_json(original)
        if m.edits:
            data["edit_date"] = m.date
        return data

    # --- updates and callback queries -------------------------------------------------------------

    def push(self, update: dict[str, Any], *, to: str | None = None) -> None:
        """Queue an update for one bot (`to`, a token) or for every bot in the group."""
        update["update_id"] = next(self._update_ids)
        for token, queue in self._updates.items():
            if to is None or token == to:
                queue.append(update)
        self.lock.notify_all()

    def updates_from(self, token: str, offset: int) -> list[dict[str, Any]]:
        """The updates for `token` from `offset` on; a non-zero offset confirms (drops) the earlier ones."""
        if offset:
            self._updates[token] = [u for u in self._updates[token] if u["update_id"] >= offset]
        return [u for u in self._updates[token] if u["update_id"] >= offset]

    def open_query(self, message: StoredMessage) -> str:
        """A new callback query about `message`, which only the bot that sent it may answer."""
        query_id = f"q{next(self._query_ids)}"
        self.queries[query_id] = False
        self._query_bots[query_id] = message.bot.token
        return query_id

    def check_answerable(self, query_id: str, caller: FakeBot) -> None:
        """Raise unless `query_id` is open and went to `caller`."""
        if self.queries.get(query_id, True) or self._query_bots.get(query_id) != caller.token:
            raise ApiError(
                400, "Bad Request: query is too old and response timeout expired or query ID is invalid"
            )

    # --- the journal, rate limits and scripted failures -------------------------------------------

    def record(self, call: Call) -> None:
        self.journal.append(call)
        self.lock.notify_all()

    def rate_limit(self, caller: FakeBot, chat_id: int) -> None:
        if self.per_chat_interval_s <= 0:
            return
        now = time.monotonic()
        key = (caller.token, chat_id)
        last = self._last_send.get(key)
        if last is not None and now - last < self.per_chat_interval_s:
            raise ApiError(429, "Too Many Requests: retry after 1", retry_after=1)
        self._last_send[key] = now

    def fail_next(
        self, method: str, code: int, retry_after: int | None, times: int, description: str
    ) -> None:
        text = description or (
            f"Too Many Requests: retry after {retry_after}" if code == 429 else "Internal Server Error"
        )
        self._failures.append(
            _ScriptedFailure(method, code, text, retry_after if code == 429 else None, times)
        )

    def raise_scripted_failure(self, method: str) -> None:
        """Raise the next failure scripted for `method`, if any is left."""
        for failure in self._failures:
            if failure.method == method and failure.times > 0:
                failure.times -= 1
                raise ApiError(failure.code, failure.description, failure.retry_after)
