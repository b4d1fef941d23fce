"""After an automatic revert the card says what happens next and offers Diagnose again, whose proposal
leaves the reverted fix out (issue 17.4): through the real python-telegram-bot against the fake Bot API,
the real claude binary against the fake Messages API."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from bot.models import ChangeStatus, IncidentState
from tests.fakes.telegram_world import (  # noqa: F401
    ANSWER,
    APPROVER,
    CHAT,
    RESTART,
    TelegramWorld,
    telegram_world_fixture,
    traceback_lines,
    until,
)

pytestmark = [pytest.mark.real_cli, pytest.mark.slow]

# The reverted fix in other words: more context, the same change (the same diff).
FIX_REWORDED = {
    "title": "Look prices up with a default",
    "rationale": "Unknown items cost nothing.",
    "risk": "low",
    "kind": "patch",
    "edits": [
        {
            "path": "app.py",
            "old": "def total(name):\n    return PRICES[name]\n",
            "new": "def total(name):\n    return PRICES.get(name, 0)\n",
        }
    ],
}
TOLD = "TRIED AND REVERTED"


def answer(body: Mapping[str, Any]) -> object:
    if TOLD in str(body):
        return {"summary": "still the KeyError", "candidates": [FIX_REWORDED, RESTART]}
    return ANSWER


async def test_after_an_automatic_revert_the_card_went_silent(telegram_world) -> None:  # type: ignore[no-untyped-def]
    world: TelegramWorld = await telegram_world(answer)
    await world.start_daemon()
    await world.connected()
    card = await world.error_to_card()
    world.bot_api.press(APPROVER, CHAT, card.message_id, text="Approve #1")
    await until(
        lambda: any(c.status is ChangeStatus.RESTARTED for c in world.store.changes()), 30, "the verification"
    )
    world.append(traceback_lines(world.repo, exc="ZeroDivisionError: division by zero", func="split"))

    reverted = await world.card_shows(card.message_id, "next: if the error comes back", timeout=30)
    assert "reverted" in reverted.text and "diagnosed again from" in reverted.text
    assert "/diagnose svc" in reverted.text
    assert [b["text"] for b in reverted.buttons()] == ["Diagnose again"]
    token = str(reverted.buttons()[0]["callback_data"]).removeprefix("g:")
    [incident] = [i for i in world.store.incidents() if i.id == 1]
    assert incident.state is IncidentState.REVERTED

    world.bot_api.press(APPROVER, CHAT, card.message_id, text="Diagnose again")
    await until(lambda: world.bot_api.message(CHAT, card.message_id).reply_markup is None, what="button gone")
    [pressed] = world.bot_api.calls("answerCallbackQuery", ok=True)[-1:]
    assert "diagnosing #1 again" in pressed.params["text"]
    fresh = await world.card(after=card.message_id)
    assert "#1 svc" in fresh.text
    assert [b["text"] for b in fresh.buttons()][:2] == ["Approve #1", "Reject"]  # the restart only
    assert "PRICES.get" not in fresh.text and "was applied before and reverted" in fresh.text
    prompts = [e for e in world.messages_api.message_requests() if TOLD in e.text()]
    assert prompts and "+    return PRICES.get(name, 0)" in prompts[-1].text().replace("\\n", "\n")

    again = await world.pipeline.diagnose_again(token, "telegram:222")  # a second press does nothing
    assert again == f"already asked by telegram:{APPROVER}: see the newer card"
