"""The simulated people in the fake's chats: they send messages and press buttons, which the bots receive
as updates. Both functions expect the state's lock to be held."""

from __future__ import annotations

import time
from typing import Any

from bot.demo.fake_bot_limits import utf16_len
from bot.demo.fake_bot_records import StoredMessage, UserAction, user_json
from bot.demo.fake_bot_state import FakeBotState


def send_as_user(
    state: FakeBotState, user_id: int, chat_id: int, text: str, *, reply_to: int | None, first_name: str
) -> StoredMessage:
    """A person's message in `chat_id`; every bot in the chat gets it (a leading /command marked so)."""
    message = state.post(
        chat_id, text=text, raw=text, from_user=user_json(user_id, first_name), reply_to=reply_to
    )
    state.actions.append(UserAction(user_id, chat_id, time.time(), text, message.message_id))
    payload = state.message_json(message)
    if text.startswith("/"):
        command = text.split(maxsplit=1)[0]
        payload["entities"] = [{"type": "bot_command", "offset": 0, "length": utf16_len(command)}]
    state.push({"message": payload})
    return message


def press_button(
    state: FakeBotState, user_id: int, chat_id: int, message_id: int, *, text: str | None, data: str | None
) -> str:
    """Press the button of a bot message whose label starts with `text` (or whose data is `data`); only the
    bot that sent the message gets the callback query. Returns the query's id."""
    message = state.messages[(chat_id, message_id)]
    button = _button(message, text, data)
    query_id = state.open_query(message)
    label, button_data = str(button.get("text", "")), str(button["callback_data"])
    state.actions.append(UserAction(user_id, chat_id, time.time(), label, message_id, button_data, query_id))
    query = {
        "id": query_id,
        "from": user_json(user_id, "User"),
        "chat_instance": f"ci{chat_id}",
        "message": state.message_json(message),
        "data": button["callback_data"],
    }
    state.push({"callback_query": query}, to=message.bot.token)
    return query_id


def _button(message: StoredMessage, text: str | None, data: str | None) -> dict[str, Any]:
    buttons = message.buttons()
    for button in buttons:
        if (text is not None and button.get("text", "").startswith(text)) or (
            data is not None and button.get("callback_data") == data
        ):
            return button
    labels = [b.get("text") for b in buttons]
    raise AssertionError(f"message {message.message_id} has no button {text or data!r}; it has {labels}")
