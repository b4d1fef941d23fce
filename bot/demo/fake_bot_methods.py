"""The Bot API methods the fake implements, each a function of (state, calling bot, params, files).

`METHODS` maps a method name to its function; they run with the state's lock held. `get_updates` is apart:
it long-polls, so it takes the lock itself and waits on it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from bot.demo.fake_bot_limits import (
    NOT_MODIFIED,
    TEXT_NOT_MODIFIED,
    check_answer_text,
    check_markup,
    checked_caption,
    checked_commands,
    checked_text,
)
from bot.demo.fake_bot_records import DEFAULT_BOT, ApiError, FakeBot, StoredMessage
from bot.demo.fake_bot_state import FakeBotState

Params = Mapping[str, Any]
Files = Mapping[str, bytes]
Method = Callable[[FakeBotState, FakeBot, Params, Files], Any]


def get_updates(state: FakeBotState, token: str, params: Params) -> list[dict[str, Any]]:
    offset = int(params.get("offset", 0) or 0)
    timeout = float(params.get("timeout", 0) or 0)
    limit = int(params.get("limit", 100) or 100)
    deadline = time.monotonic() + timeout
    with state.lock:
        state.raise_scripted_failure("getUpdates")
        while True:
            ready = state.updates_from(token, offset)[:limit]
            remaining = deadline - time.monotonic()
            if state.closing or state.down:
                return []
            if ready or remaining <= 0:
                return ready
            state.lock.wait(remaining)


def get_me(state: FakeBotState, caller: FakeBot, params: Params, files: Files) -> dict[str, Any]:
    return caller.user() | {
        "can_join_groups": True,
        "can_read_all_group_messages": False,
        "supports_inline_queries": False,
    }


def delete_webhook(state: FakeBotState, caller: FakeBot, params: Params, files: Files) -> bool:
    return True


def set_my_commands(state: FakeBotState, caller: FakeBot, params: Params, files: Files) -> bool:
    chosen = checked_commands(_json_param(params, "commands"))
    state.commands_by_bot[caller.token] = chosen
    if caller is DEFAULT_BOT:
        state.commands = chosen
    return True


def get_my_commands(
    state: FakeBotState, caller: FakeBot, params: Params, files: Files
) -> list[dict[str, str]]:
    return list(state.commands_by_bot.get(caller.token, []))


def send_message(state: FakeBotState, caller: FakeBot, params: Params, files: Files) -> dict[str, Any]:
    chat_id = _chat(params)
    raw = str(params.get("text", ""))
    text = checked_text(raw, params.get("parse_mode"), too_long="message is too long")
    markup = _markup(params)
    state.rate_limit(caller, chat_id)
    message = state.post(
        chat_id, text=text, raw=raw, sender=caller, reply_markup=markup, reply_to=_reply_to(state, params)
    )
    return state.message_json(message)


def send_document(state: FakeBotState, caller: FakeBot, params: Params, files: Files) -> dict[str, Any]:
    chat_id = _chat(params)
    if "document" not in files:
        raise ApiError(400, "Bad Request: there is no document in the request")
    caption_raw = str(params.get("caption", ""))
    caption = checked_caption(caption_raw, params.get("parse_mode"))
    markup = _markup(params)
    state.rate_limit(caller, chat_id)
    message_id = state.next_message_id(chat_id)
    document = {
        "file_id": f"file{chat_id}_{message_id}",
        "file_unique_id": f"u{chat_id}_{message_id}",
        "file_name": str(params.get("_document_filename", "document")),
        "mime_type": "text/x-diff",
        "file_size": len(files["document"]),
    }
    message = state.post(
        chat_id,
        text=caption,
        raw=caption_raw,
        sender=caller,
        reply_markup=markup,
        reply_to=_reply_to(state, params),
        document=document,
        message_id=message_id,
    )
    return state.message_json(message)


def edit_message_text(state: FakeBotState, caller: FakeBot, params: Params, files: Files) -> dict[str, Any]:
    message = _editable(state, caller, params)
    raw = str(params.get("text", ""))
    text = checked_text(raw, params.get("parse_mode"), too_long="MESSAGE_TOO_LONG")
    markup = _markup(params)
    if raw == message.raw and markup == message.reply_markup:
        raise ApiError(400, TEXT_NOT_MODIFIED)
    state.rate_limit(caller, message.chat_id)
    message.text, message.raw = text, raw
    return _edited(state, message, markup)


def edit_message_reply_markup(
    state: FakeBotState, caller: FakeBot, params: Params, files: Files
) -> dict[str, Any]:
    message = _editable(state, caller, params)
    markup = _markup(params)
    if markup == message.reply_markup:
        raise ApiError(400, NOT_MODIFIED)
    state.rate_limit(caller, message.chat_id)
    return _edited(state, message, markup)


def answer_callback_query(state: FakeBotState, caller: FakeBot, params: Params, files: Files) -> bool:
    query_id = str(params.get("callback_query_id", ""))
    state.check_answerable(query_id, caller)
    check_answer_text(params)
    state.queries[query_id] = True
    return True


METHODS: dict[str, Method] = {
    "getMe": get_me,
    "deleteWebhook": delete_webhook,
    "setMyCommands": set_my_commands,
    "getMyCommands": get_my_commands,
    "sendMessage": send_message,
    "sendDocument": send_document,
    "editMessageText": edit_message_text,
    "editMessageReplyMarkup": edit_message_reply_markup,
    "answerCallbackQuery": answer_callback_query,
}


def _edited(state: FakeBotState, message: StoredMessage, markup: dict[str, Any] | None) -> dict[str, Any]:
    message.reply_markup = markup
    message.edits += 1
    return state.message_json(message)


def _editable(state: FakeBotState, caller: FakeBot, params: Params) -> StoredMessage:
    chat_id = _chat(params)
    message = state.messages.get((chat_id, int(params.get("message_id", 0) or 0)))
    if message is None:
        raise ApiError(400, "Bad Request: message to edit not found")
    if not message.from_bot or message.bot.token != caller.token:
        raise ApiError(400, "Bad Request: message can't be edited")
    return message


def _chat(params: Params) -> int:
    try:
        return int(params["chat_id"])
    except (KeyError, ValueError):
        raise ApiError(400, "Bad Request: chat not found") from None


def _markup(params: Params) -> dict[str, Any] | None:
    return check_markup(_json_param(params, "reply_markup"))


def _json_param(params: Params, name: str) -> Any:
    value = params.get(name)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise ApiError(400, f"Bad Request: can't parse {name} JSON object") from None
    return value


def _reply_to(state: FakeBotState, params: Params) -> int | None:
    """The message replied to; one that is gone is an error unless the sender allowed sending without it."""
    parameters = _json_param(params, "reply_parameters")
    allow_without = False
    if "reply_to_message_id" in params:
        target = int(params["reply_to_message_id"])
        allow_without = str(params.get("allow_sending_without_reply", "")).lower() == "true"
    elif isinstance(parameters, dict) and "message_id" in parameters:
        target = int(parameters["message_id"])
        allow_without = bool(parameters.get("allow_sending_without_reply"))
    else:
        return None
    if (_chat(params), target) in state.messages:
        return target
    if allow_without:
        return None
    raise ApiError(400, "Bad Request: message to be replied not found")
