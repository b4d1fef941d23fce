"""Who may act: an allow-list of user ids and chat ids, checked in handler group -1 for every update.

An update from anyone else stops there (`ApplicationHandlerStop`): it is audited, its button press gets a
bare "not allowed" answer (so the client stops spinning), and nothing about incidents is sent back.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from telegram import Update
from telegram.error import TelegramError
from telegram.ext import ApplicationHandlerStop, ContextTypes, TypeHandler

from bot.clock import SystemClock
from bot.errors import ConfigError
from bot.interfaces import Clock
from bot.store import Store

log = logging.getLogger("healbot.telegram.auth")

AUTH_GROUP = -1
NOT_ALLOWED = "not allowed"


@dataclass(frozen=True, slots=True)
class AllowList:
    users: frozenset[int]
    chats: frozenset[int]

    @classmethod
    def from_config(cls, users: Iterable[str], chats: Iterable[str]) -> AllowList:
        return cls(_ids(users, "approval.approvers"), _ids(chats, "approval.chats"))

    def allows(self, user_id: int | None, chat_id: int | None) -> bool:
        """Both the person and the chat must be listed; an update without either is refused."""
        return user_id is not None and chat_id is not None and user_id in self.users and chat_id in self.chats


def _ids(values: Iterable[str], key: str) -> frozenset[int]:
    ids = set()
    for value in values:
        try:
            ids.add(int(str(value).strip()))
        except ValueError:
            raise ConfigError(f"{value!r} is not a numeric Telegram id", key=key) from None
    return frozenset(ids)


def actor(user_id: int) -> str:
    return f"telegram:{user_id}"


def describe(update: Update) -> str:
    if update.callback_query is not None:
        return f"button {update.callback_query.data!r}"[:200]
    message = update.effective_message
    if message is not None and message.text:
        return f"message {message.text[:150]!r}"
    return "update"


class Gate:
    """The group -1 handler. Strangers are audited once per update and stopped."""

    def __init__(self, allow: AllowList, store: Store, clock: Clock | None = None) -> None:
        self.allow = allow
        self.store = store
        self.clock = clock or SystemClock()

    def handler(self) -> TypeHandler[Update, ContextTypes.DEFAULT_TYPE, None]:
        return TypeHandler(Update, self.check)

    async def check(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        user = update.effective_user
        chat = update.effective_chat
        user_id = user.id if user is not None else None
        chat_id = chat.id if chat is not None else None
        if self.allow.allows(user_id, chat_id):
            return
        who = actor(user_id) if user_id is not None else "telegram:unknown"
        self.store.audit(who, "telegram_denied", f"chat {chat_id}: {describe(update)}", at=self.clock.now())
        log.warning("ignored an update from %s in chat %s", who, chat_id)
        query = update.callback_query
        if query is not None:
            try:
                await query.answer(NOT_ALLOWED)
            except TelegramError as exc:
                log.warning("could not answer a stranger's button press: %s", exc)
        raise ApplicationHandlerStop
