"""Telegram's limits as the fake Bot API enforces them, with Telegram's own error texts.

Message length (counted in UTF-16 units after HTML entity parsing), the HTML subset, 64-byte
callback_data, bot command names, and "message is not modified".
"""

from __future__ import annotations

import html.parser
import re
from collections.abc import Mapping
from typing import Any

from bot.demo.fake_bot_records import ApiError

MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_CALLBACK_DATA = 64
MAX_ANSWER_TEXT = 200
MAX_COMMAND_DESCRIPTION = 256
NOT_MODIFIED = "Bad Request: message is not modified"
TEXT_NOT_MODIFIED = (
    f"{NOT_MODIFIED}: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)
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


def checked_text(raw: str, parse_mode: str | None, *, too_long: str) -> str:
    """The plain text of a message's `raw` text: parsed, not empty, within MAX_TEXT (else `too_long`)."""
    text = parse_text(raw, parse_mode)
    if not text.strip():
        raise ApiError(400, "Bad Request: message text is empty")
    if utf16_len(text) > MAX_TEXT:
        raise ApiError(400, f"Bad Request: {too_long}")
    return text


def checked_caption(raw: str, parse_mode: str | None) -> str:
    caption = parse_text(raw, parse_mode)
    if utf16_len(caption) > MAX_CAPTION:
        raise ApiError(400, "Bad Request: message caption is too long")
    return caption


def check_markup(markup: Any) -> dict[str, Any] | None:
    """An inline keyboard whose every callback_data is 1..64 bytes, or None when there is none."""
    if markup is None:
        return None
    for row in markup.get("inline_keyboard", []):
        for button in row:
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode("utf-8")) <= MAX_CALLBACK_DATA:
                raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
    result: dict[str, Any] = markup
    return result


def checked_commands(commands: Any) -> list[dict[str, str]]:
    """The (command, description) pairs of a setMyCommands call, each checked as Telegram does."""
    if not isinstance(commands, list) or not commands:
        raise ApiError(400, "Bad Request: commands must be a non-empty list")
    for command in commands:
        if not _COMMAND_NAME.match(str(command.get("command", ""))):
            raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
        if not 1 <= len(str(command.get("description", ""))) <= MAX_COMMAND_DESCRIPTION:
            raise ApiError(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
    return [{"command": c["command"], "description": c["description"]} for c in commands]


def check_answer_text(params: Mapping[str, Any]) -> None:
    if len(str(params.get("text", ""))) > MAX_ANSWER_TEXT:
        raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
