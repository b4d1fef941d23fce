"""The fake Telegram Bot API now ships in the product (bot/demo/fake_bot_api.py); tests import it here."""

from __future__ import annotations

from bot.demo.fake_bot_api import (
    BOT_ID,
    BOT_USERNAME,
    MAX_ANSWER_TEXT,
    MAX_CALLBACK_DATA,
    MAX_CAPTION,
    MAX_TEXT,
    TOKEN,
    ApiError,
    Call,
    FakeBotApi,
    StoredMessage,
    UserAction,
    parse_text,
    utf16_len,
)

__all__ = [
    "BOT_ID",
    "BOT_USERNAME",
    "MAX_ANSWER_TEXT",
    "MAX_CALLBACK_DATA",
    "MAX_CAPTION",
    "MAX_TEXT",
    "TOKEN",
    "ApiError",
    "Call",
    "FakeBotApi",
    "StoredMessage",
    "UserAction",
    "parse_text",
    "utf16_len",
]
