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
"""

from __future__ import annotations

import email.parser
import email.policy
import html
import html.parser
import itertools
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

T = TypeVar("T")

TOKEN = "123456:TEST-TOKEN"  # noqa: S105 (the fake's own, not a secret)
BOT_ID = 123456
BOT_USERNAME = "healbot_test_bot"
MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_CALLBACK_DATA = 64
MAX_ANSWER_TEXT = 200
_COMMAND_NAME = re.compile(r"^[a-z0-9_]{1,32}$")
_ALLOWED_TAGS = {
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "a",
    "code",
    "pre",
    "tg-spoiler",
    "span",
    "blockquote",
    "tg-emoji",
}
_SENDING_METHODS = {"sendMessage", "sendDocument", "editMessageText", "editMessageReplyMarkup"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


class ApiError(Exception):
    def __init__(self, code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class FakeBot:
    """One bot account the fake serves: its token, id and @username."""

    token: str
    bot_id: int
    username: str
    first_name: str = "healbot"

    def user(self) -> dict[str, Any]:
        return {"id": self.bot_id, "is_bot": True, "first_name": self.first_name, "username": self.username}


DEFAULT_BOT = FakeBot(TOKEN, BOT_ID, BOT_USERNAME)


@dataclass(frozen=True, slots=True)
class Call:
    """One request the bot made, and how the fake answered it."""

    method: str
    params: Mapping[str, Any]
    status: int
    error: str | None
    at: float
    result: Any = None
    files: Mapping[str, bytes] = field(default_factory=dict)
    token: str = TOKEN  # which bot made the call

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def chat_id(self) -> str | None:
        value = self.params.get("chat_id")
        return None if value is None else str(value)


@dataclass(frozen=True, slots=True)
class UserAction:
    """Something a person did in a chat through the helpers below (a message or a button press)."""

    user_id: int
    chat_id: int
    at: float
    text: str  # the message text, or the pressed button's label
    message_id: int  # the user's own message, or the bot message whose button was pressed
    button_data: str | None = None
    query_id: str | None = None


@dataclass
class StoredMessage:
    chat_id: int
    message_id: int
    from_bot: bool
    text: str  # plain text, as Telegram keeps it after parsing entities
    raw: str  # what was sent (HTML source)
    reply_markup: dict[str, Any] | None
    date: int
    reply_to: int | None = None
    document: dict[str, Any] | None = None
    from_user: dict[str, Any] | None = None
    edits: int = 0
    bot: FakeBot = DEFAULT_BOT  # the bot that sent it (when from_bot)

    def buttons(self) -> list[dict[str, Any]]:
        rows = (self.reply_markup or {}).get("inline_keyboard", [])
        return [button for row in rows for button in row]


@dataclass
class _Failure:
    method: str
    code: int
    description: str
    retry_after: int | None
    times: int


class _HtmlText(html.parser.HTMLParser):
    """Checks Telegram's HTML subset and extracts the plain text, as Telegram's entity parser does."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.stack: list[str] = []
        self.problem: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _ALLOWED_TAGS:
            self.problem = self.problem or f'unsupported start tag "{tag}"'
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problem = self.problem or f'unmatched end tag "{tag}"'
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def parse_text(text: str, parse_mode: str | None) -> str:
    """The plain text Telegram would store; raises ApiError 400 like Telegram does."""
    if parse_mode is None or parse_mode == "":
        return text
    if parse_mode.upper() != "HTML":
        raise ApiError(400, f"Bad Request: the fake supports only HTML parse mode, not {parse_mode}")
    if re.search(r"<(?![a-zA-Z/])", text) or re.search(r"&(?![a-zA-Z]+;|#\d+;|#x[0-9a-fA-F]+;)", text):
        raise ApiError(400, "Bad Request: can't parse entities: unescaped < or & in the text")
    parser = _HtmlText()
    parser.feed(text)
    parser.close()
    if parser.problem:
        raise ApiError(400, f"Bad Request: can't parse entities: {parser.problem}")
    if parser.stack:
        raise ApiError(400, f'Bad Request: can\'t parse entities: unclosed tag "{parser.stack[-1]}"')
    return "".join(parser.parts)  # convert_charrefs already turned &amp; etc. into characters


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


class FakeBotApi:
    """Start with `start()`, point PTB at `base_url` / `base_file_url`, stop with `stop()`."""

    def __init__(self, *, per_chat_interval_s: float = 0.0) -> None:
        self.port = free_port()
        self.per_chat_interval_s = per_chat_interval_s  # enforce Telegram's ~1 msg/s per chat with 429s
        self._lock = threading.Condition()
        self._journal: list[Call] = []
        self._bots: dict[str, FakeBot] = {TOKEN: DEFAULT_BOT}
        self._caller = DEFAULT_BOT  # the bot whose call is being handled (set with the lock held)
        self._updates: dict[str, list[dict[str, Any]]] = {TOKEN: []}  # per bot token
        self._query_bots: dict[str, str] = {}  # callback query id -> token of the bot it went to
        self.commands_by_bot: dict[str, list[dict[str, str]]] = {}
        self._update_ids = itertools.count(1)
        self._message_ids: dict[int, itertools.count[int]] = {}
        self._messages: dict[tuple[int, int], StoredMessage] = {}
        self._queries: dict[str, bool] = {}  # callback query id -> answered
        self._query_ids = itertools.count(1)
        self._failures: list[_Failure] = []
        self._last_send: dict[tuple[str, int], float] = {}
        self.commands: list[dict[str, str]] = []
        self._actions: list[UserAction] = []
        self.down: str | None = None  # None, "refuse" or "502"
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._closing = False

    def add_bot(self, token: str, bot_id: int, username: str, first_name: str = "healbot") -> FakeBot:
        """Another bot account in the same fake (a second healbot in the group)."""
        bot = FakeBot(token, bot_id, username, first_name)
        with self._lock:
            if token in self._bots:
                raise ValueError(f"token {token!r} is registered already")
            self._bots[token] = bot
            self._updates[token] = []
        return bot

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> FakeBotApi:
        self._serve()
        return self

    def _serve(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="fake-bot-api", daemon=True)
        self._thread.start()

    def _unserve(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def stop(self) -> None:
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        self._unserve()

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
        if mode not in ("refuse", "502"):
            raise ValueError(f"unknown outage mode {mode!r}")
        with self._lock:
            self.down = mode
            self._lock.notify_all()  # parked long polls end now
        if mode == "refuse":
            self._unserve()

    def come_back(self) -> None:
        with self._lock:
            was = self.down
            self.down = None
        if was == "refuse":
            self._serve()

    def fail_next(
        self,
        method: str,
        code: int = 429,
        *,
        retry_after: int | None = 1,
        times: int = 1,
        description: str = "",
    ) -> None:
        text = description or (
            f"Too Many Requests: retry after {retry_after}" if code == 429 else "Internal Server Error"
        )
        with self._lock:
            self._failures.append(_Failure(method, code, text, retry_after if code == 429 else None, times))

    # --- the journal ------------------------------------------------------------------------------

    def journal(self) -> list[Call]:
        with self._lock:
            return list(self._journal)

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
            return self._messages[(chat_id, message_id)]

    def bot_messages(self, chat_id: int, *, token: str | None = None) -> list[StoredMessage]:
        """The bots' messages in `chat_id` (only those of the bot with `token`, when given)."""
        with self._lock:
            return sorted(
                (
                    m
                    for m in self._messages.values()
                    if m.chat_id == chat_id and m.from_bot and (token is None or m.bot.token == token)
                ),
                key=lambda m: m.message_id,
            )

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
            return list(self._actions)

    def unanswered_queries(self) -> list[str]:
        with self._lock:
            return [q for q, answered in self._queries.items() if not answered]

    # --- what users do ----------------------------------------------------------------------------

    def user_message(
        self, user_id: int, chat_id: int, text: str, *, reply_to: int | None = None, first_name: str = "User"
    ) -> StoredMessage:
        with self._lock:
            message = StoredMessage(
                chat_id=chat_id,
                message_id=self._next_message_id(chat_id),
                from_bot=False,
                text=text,
                raw=text,
                reply_markup=None,
                date=int(time.time()),
                reply_to=reply_to,
                from_user=_user(user_id, first_name),
            )
            self._messages[(chat_id, message.message_id)] = message
            self._actions.append(UserAction(user_id, chat_id, time.time(), text, message.message_id))
            payload = self._message_json(message)
            if text.startswith("/"):
                command = text.split(maxsplit=1)[0]
                payload["entities"] = [{"type": "bot_command", "offset": 0, "length": utf16_len(command)}]
            self._push({"message": payload})
            return message

    def command(self, user_id: int, chat_id: int, text: str) -> StoredMessage:
        if not text.startswith("/"):
            raise ValueError("a command starts with /")
        return self.user_message(user_id, chat_id, text)

    def reply(self, user_id: int, chat_id: int, to_message_id: int, text: str) -> StoredMessage:
        return self.user_message(user_id, chat_id, text, reply_to=to_message_id)

    def press(
        self, user_id: int, chat_id: int, message_id: int, *, text: str | None = None, data: str | None = None
    ) -> str:
        """Press the button of a bot message whose label starts with `text` (or whose data is `data`)."""
        with self._lock:
            message = self._messages[(chat_id, message_id)]
            buttons = message.buttons()
            chosen = next(
                (
                    b
                    for b in buttons
                    if (text is not None and b.get("text", "").startswith(text))
                    or (data is not None and b.get("callback_data") == data)
                ),
                None,
            )
            if chosen is None:
                labels = [b.get("text") for b in buttons]
                raise AssertionError(f"message {message_id} has no button {text or data!r}; it has {labels}")
            query_id = f"q{next(self._query_ids)}"
            self._queries[query_id] = False
            self._query_bots[query_id] = message.bot.token
            self._actions.append(
                UserAction(
                    user_id,
                    chat_id,
                    time.time(),
                    str(chosen.get("text", "")),
                    message_id,
                    str(chosen["callback_data"]),
                    query_id,
                )
            )
            self._push(
                {
                    "callback_query": {
                        "id": query_id,
                        "from": _user(user_id, "User"),
                        "chat_instance": f"ci{chat_id}",
                        "message": self._message_json(message),
                        "data": chosen["callback_data"],
                    }
                },
                to=message.bot.token,
            )
            return query_id

    # --- internals --------------------------------------------------------------------------------

    def _next_message_id(self, chat_id: int) -> int:
        counter = self._message_ids.setdefault(chat_id, itertools.count(1))
        return next(counter)

    def _push(self, update: dict[str, Any], *, to: str | None = None) -> None:
        """Queue an update for one bot (`to`, a token) or for every bot in the group."""
        update["update_id"] = next(self._update_ids)
        for token, queue in self._updates.items():
            if to is None or token == to:
                queue.append(update)
        self._lock.notify_all()

    def _message_json(self, m: StoredMessage) -> dict[str, Any]:
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
            original = self._messages.get((m.chat_id, m.reply_to))
            if original is not None:
                data["reply_to_message"] = self._message_json(original)
        if m.edits:
            data["edit_date"] = m.date
        return data

    def _scripted_failure(self, method: str) -> ApiError | None:
        for failure in self._failures:
            if failure.method == method and failure.times > 0:
                failure.times -= 1
                return ApiError(failure.code, failure.description, failure.retry_after)
        return None

    def _rate_limit(self, chat_id: int) -> None:
        if self.per_chat_interval_s <= 0:
            return
        now = time.monotonic()
        key = (self._caller.token, chat_id)
        last = self._last_send.get(key)
        if last is not None and now - last < self.per_chat_interval_s:
            raise ApiError(429, "Too Many Requests: retry after 1", retry_after=1)
        self._last_send[key] = now

    def knows_token(self, token: str) -> bool:
        with self._lock:
            return token in self._bots

    def handle(self, method: str, params: dict[str, Any], files: dict[str, bytes], token: str = TOKEN) -> Any:
        """Run one Bot API method; return its result or raise ApiError. Called with the lock NOT held."""
        if method == "getUpdates":
            return self._get_updates(params, token)
        with self._lock:
            failure = self._scripted_failure(method)
            if failure is not None:
                raise failure
            handler = getattr(self, f"_m_{method}", None)
            if handler is None:
                raise ApiError(404, "Not Found")
            self._caller = self._bots[token]
            return handler(params, files)

    def _get_updates(self, params: Mapping[str, Any], token: str = TOKEN) -> list[dict[str, Any]]:
        offset = int(params.get("offset", 0) or 0)
        timeout = float(params.get("timeout", 0) or 0)
        limit = int(params.get("limit", 100) or 100)
        deadline = time.monotonic() + timeout
        with self._lock:
            failure = self._scripted_failure("getUpdates")
            if failure is not None:
                raise failure
            if offset:
                self._updates[token] = [u for u in self._updates[token] if u["update_id"] >= offset]
            while True:
                ready = [u for u in self._updates[token] if u["update_id"] >= offset][:limit]
                remaining = deadline - time.monotonic()
                if self._closing or self.down:
                    return []
                if ready or remaining <= 0:
                    return ready
                self._lock.wait(remaining)

    def _record(self, call: Call) -> None:
        with self._lock:
            self._journal.append(call)
            self._lock.notify_all()

    # --- methods (lock held) ----------------------------------------------------------------------

    def _m_getMe(self, params: Mapping[str, Any], files: Mapping[str, bytes]) -> dict[str, Any]:
        return self._caller.user() | {
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    def _m_deleteWebhook(self, params: Mapping[str, Any], files: Mapping[str, bytes]) -> bool:
        return True

    def _m_setMyCommands(self, params: Mapping[str, Any], files: Mapping[str, bytes]) -> bool:
        commands = _json_param(params, "commands")
        if not isinstance(commands, list) or not commands:
            raise ApiError(400, "Bad Request: commands must be a non-empty list")
        for command in commands:
            if not _COMMAND_NAME.match(str(command.get("command", ""))):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise ApiError(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
        chosen = [{"command": c["command"], "description": c["description"]} for c in commands]
        self.commands_by_bot[self._caller.token] = chosen
        if self._caller is DEFAULT_BOT:
            self.commands = chosen
        return True

    def _m_getMyCommands(self, params: Mapping[str, Any], files: Mapping[str, bytes]) -> list[dict[str, str]]:
        return list(self.commands_by_bot.get(self._caller.token, []))

    def _check_markup(self, params: Mapping[str, Any]) -> dict[str, Any] | None:
        markup = _json_param(params, "reply_markup")
        if markup is None:
            return None
        for row in markup.get("inline_keyboard", []):
            for button in row:
                data = button.get("callback_data")
                if data is not None and not 1 <= len(str(data).encode("utf-8")) <= MAX_CALLBACK_DATA:
                    raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
        result: dict[str, Any] = markup
        return result

    def _chat(self, params: Mapping[str, Any]) -> int:
        try:
            return int(params["chat_id"])
        except (KeyError, ValueError):
            raise ApiError(400, "Bad Request: chat not found") from None

    def _m_sendMessage(self, params: Mapping[str, Any], files: Mapping[str, bytes]) -> dict[str, Any]:
        chat_id = self._chat(params)
        raw = str(params.get("text", ""))
        text = parse_text(raw, params.get("parse_mode"))
        if not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if utf16_len(text) > MAX_TEXT:
            raise ApiError(400, "Bad Request: message is too long")
        markup = self._check_markup(params)
        self._rate_limit(chat_id)
        reply_to = _reply_to(params)
        message = StoredMessage(
            chat_id,
            self._next_message_id(chat_id),
            True,
            text,
            raw,
            markup,
            int(time.time()),
            reply_to,
            bot=self._caller,
        )
        self._messages[(chat_id, message.message_id)] = message
        return self._message_json(message)

    def _m_sendDocument(self, params: Mapping[str, Any], files: Mapping[str, bytes]) -> dict[str, Any]:
        chat_id = self._chat(params)
        if "document" not in files:
            raise ApiError(400, "Bad Request: there is no document in the request")
        caption_raw = str(params.get("caption", ""))
        caption = parse_text(caption_raw, params.get("parse_mode"))
        if utf16_len(caption) > MAX_CAPTION:
            raise ApiError(400, "Bad Request: message caption is too long")
        markup = self._check_markup(params)
        self._rate_limit(chat_id)
        message_id = self._next_message_id(chat_id)
        content = files["document"]
        document = {
            "file_id": f"file{chat_id}_{message_id}",
            "file_unique_id": f"u{chat_id}_{message_id}",
            "file_name": str(params.get("_document_filename", "document")),
            "mime_type": "text/x-diff",
            "file_size": len(content),
        }
        message = StoredMessage(
            chat_id,
            message_id,
            True,
            caption,
            caption_raw,
            markup,
            int(time.time()),
            _reply_to(params),
            document,
            bot=self._caller,
        )
        self._messages[(chat_id, message_id)] = message
        return self._message_json(message)

    def _editable(self, params: Mapping[str, Any]) -> StoredMessage:
        chat_id = self._chat(params)
        message = self._messages.get((chat_id, int(params.get("message_id", 0) or 0)))
        if message is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        if not message.from_bot or message.bot.token != self._caller.token:
            raise ApiError(400, "Bad Request: message can't be edited")
        return message

    def _m_editMessageText(self, params: Mapping[str, Any], files: Mapping[str, bytes]) -> dict[str, Any]:
        message = self._editable(params)
        raw = str(params.get("text", ""))
        text = parse_text(raw, params.get("parse_mode"))
        if not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if utf16_len(text) > MAX_TEXT:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        markup = self._check_markup(params)
        if raw == message.raw and markup == message.reply_markup:
            raise ApiError(
                400,
                "Bad Request: message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message",
            )
        self._rate_limit(message.chat_id)
        message.text, message.raw, message.reply_markup = text, raw, markup
        message.edits += 1
        return self._message_json(message)

    def _m_editMessageReplyMarkup(
        self, params: Mapping[str, Any], files: Mapping[str, bytes]
    ) -> dict[str, Any]:
        message = self._editable(params)
        markup = self._check_markup(params)
        if markup == message.reply_markup:
            raise ApiError(400, "Bad Request: message is not modified")
        self._rate_limit(message.chat_id)
        message.reply_markup = markup
        message.edits += 1
        return self._message_json(message)

    def _m_answerCallbackQuery(self, params: Mapping[str, Any], files: Mapping[str, bytes]) -> bool:
        query_id = str(params.get("callback_query_id", ""))
        if self._queries.get(query_id, True) or self._query_bots.get(query_id) != self._caller.token:
            raise ApiError(
                400, "Bad Request: query is too old and response timeout expired or query ID is invalid"
            )
        if len(str(params.get("text", ""))) > MAX_ANSWER_TEXT:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        self._queries[query_id] = True
        return True


def _json_param(params: Mapping[str, Any], name: str) -> Any:
    value = params.get(name)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise ApiError(400, f"Bad Request: can't parse {name} JSON object") from None
    return value


def _reply_to(params: Mapping[str, Any]) -> int | None:
    if "reply_to_message_id" in params:
        return int(params["reply_to_message_id"])
    parameters = _json_param(params, "reply_parameters")
    if isinstance(parameters, dict) and "message_id" in parameters:
        return int(parameters["message_id"])
    return None


def _user(user_id: int, first_name: str) -> dict[str, Any]:
    return {"id": user_id, "is_bot": False, "first_name": first_name}


def _handler_for(api: FakeBotApi) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        fake = api

    return Handler


class _Handler(BaseHTTPRequestHandler):
    fake: FakeBotApi  # HTTP/1.0: one request per connection, so "refuse" really refuses at once

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length", 0) or 0)
        body = self.rfile.read(length) if length else b""
        match = re.match(r"^/bot([^/]+)/([A-Za-z]+)$", parts.path)
        if match is None:
            self._send(404, {"ok": False, "error_code": 404, "description": "Not Found"})
            return
        token, method = match.groups()
        params, files = _parse_body(self.headers.get("Content-Type", ""), body)
        params.update(dict(parse_qsl(parts.query)))
        fake = self.fake
        if fake.down == "502":
            fake._record(Call(method, params, 502, "Bad Gateway", time.time()))
            self._send_raw(502, b"<html><body>502 Bad Gateway</body></html>", "text/html")
            return
        if not fake.knows_token(token):
            fake._record(Call(method, params, 401, "Unauthorized", time.time(), token=token))
            self._send(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
            return
        try:
            result = fake.handle(method, params, files, token)
        except ApiError as exc:
            if fake.down == "502":  # went down during a long poll
                self._send_raw(502, b"502 Bad Gateway", "text/html")
                return
            payload: dict[str, Any] = {"ok": False, "error_code": exc.code, "description": exc.description}
            if exc.retry_after is not None:
                payload["parameters"] = {"retry_after": exc.retry_after}
            fake._record(Call(method, params, exc.code, exc.description, time.time(), None, files, token))
            self._send(exc.code, payload)
            return
        if fake.down == "502":
            self._send_raw(502, b"502 Bad Gateway", "text/html")
            return
        fake._record(Call(method, params, 200, None, time.time(), result, files, token))
        self._send(200, {"ok": True, "result": result})

    def _send(self, status: int, payload: object) -> None:
        self._send_raw(status, json.dumps(payload).encode("utf-8"), "application/json")

    def _send_raw(self, status: int, data: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass


def _parse_body(content_type: str, body: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    if not body:
        return {}, {}
    if content_type.startswith("application/json"):
        return dict(json.loads(body)), {}
    if content_type.startswith("multipart/form-data"):
        parser = email.parser.BytesParser(policy=email.policy.HTTP)
        message = parser.parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        params: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        for part in message.iter_parts():
            name = str(part.get_param("name", header="content-disposition"))
            filename = part.get_filename()
            raw_payload = part.get_payload(decode=True)
            payload = raw_payload if isinstance(raw_payload, bytes) else b""
            if filename is not None:
                files[name] = payload
                params[f"_{name}_filename"] = filename
            else:
                params[name] = payload.decode("utf-8")
        # PTB sends the file as an attach:// reference in the field of the same name
        for name, value in list(params.items()):
            if isinstance(value, str) and value.startswith("attach://"):
                ref = value.removeprefix("attach://")
                if ref in files:
                    files[name] = files[ref]
                    params[f"_{name}_filename"] = params.get(f"_{ref}_filename", "document")
        return params, files
    return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True)), {}
