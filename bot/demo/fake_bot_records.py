"""The fake Bot API's vocabulary: its default bot account, the error it answers with, and its records."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TOKEN = "123456:TEST-TOKEN"  # noqa: S105 (the fake's own, not a secret)
BOT_ID = 123456
BOT_USERNAME = "healbot_test_bot"


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
    """Something a person did in a chat through the fake's helpers (a message or a button press)."""

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


def user_json(user_id: int, first_name: str) -> dict[str, Any]:
    """A person as Telegram describes one in `from`."""
    return {"id": user_id, "is_bot": False, "first_name": first_name}
