"""A card's life after it is sent (issue 17.3, 17.5, 17.6), through the real daemon, the real claude binary
and the real python-telegram-bot against the fake Bot API: Snooze moves reminder and expiry, the reminder
and the expiry come at their time, and a verdict left to a person gets Keep and Revert buttons."""

from __future__ import annotations

import pytest

from bot.models import ChangeStatus
from bot.policy import SNOOZE_S
from bot.render import hour_minute
from tests.fakes.telegram_world import (  # noqa: F401
    APPROVER,
    CHAT,
    TelegramWorld,
    telegram_world_fixture,
)
from tests.helpers import git, until

pytestmark = [pytest.mark.real_cli, pytest.mark.slow]

PAST_THE_BASELINE_S = 65 * 60  # the error is older than the "before" window: the verdict is left to a person


async def test_snooze_answered_snoozed_but_changed_nothing(telegram_world) -> None:  # type: ignore[no-untyped-def]
    world: TelegramWorld = await telegram_world()
    await world.start_daemon()
    card = await world.error_to_card()
    [proposal] = world.store.pending_proposals()
    world.bot_api.press(APPROVER, CHAT, card.message_id, text="Snooze 1 h")
    [answer] = await until(lambda: world.bot_api.calls("answerCallbackQuery", ok=True), what="an answer")
    snoozed = world.store.proposal(proposal.id)
    assert snoozed.expires_at == pytest.approx(proposal.expires_at + SNOOZE_S)
    assert snoozed.snoozed_until is not None
    until_text = f"snoozed until {hour_minute(snoozed.snoozed_until)}"
    assert until_text in answer.params["text"]
    shown = await world.card_shows(card.message_id, f"· {until_text}")
    assert "Approve #1" in [b["text"] for b in shown.buttons()]  # still approvable
    audited = [e for e in world.store.audit_log() if e.event == "proposal:snoozed"]
    assert [e.actor for e in audited] == [f"telegram:{APPROVER}"]

    await world.stop_daemon()
    world.clock.offset = PAST_THE_BASELINE_S  # past the first expiry, before the snoozed one
    await world.start_daemon()
    await world.connected()
    world.bot_api.press(APPROVER, CHAT, card.message_id, text="Approve #1")
    await world.card_shows(card.message_id, "→ committed")
    [change] = world.store.changes()
    assert change.commit is not None and git(world.repo, "rev-parse", "HEAD") == change.commit
    assert not [m for m in world.bot_api.bot_messages(CHAT) if "reminder:" in m.text]  # not due yet


async def test_expiry_lagged_up_to_30_s_and_the_reminder_was_not_a_reply(telegram_world) -> None:  # type: ignore[no-untyped-def]
    world: TelegramWorld = await telegram_world(
        approval={"expiry_minutes": 0.05, "reminder_minutes_before": 0.025}  # expires 3 s after the card
    )
    await world.start_daemon()
    card = await world.error_to_card()
    [proposal] = world.store.pending_proposals()
    reminder = await world.text_in(CHAT, "reminder: ", after=card.message_id, timeout=15)
    assert reminder.reply_to == card.message_id
    closed = await world.card_shows(card.message_id, "expired without a decision", timeout=15)
    assert closed.reply_markup is None
    [sent] = [c for c in world.bot_api.calls("sendMessage", ok=True) if "reminder: " in c.params["text"]]
    [edit] = [c for c in world.bot_api.calls("editMessageText", ok=True) if "expired" in c.params["text"]]
    assert 0 <= sent.at - (proposal.expires_at - 1.5) < 2.0  # at the reminder time, not a job's next tick
    assert 0 <= edit.at - proposal.expires_at < 2.0
    assert world.store.changes() == []


@pytest.mark.parametrize("press", ["Keep", "Revert"])
async def test_please_decide_named_the_cli_and_gave_no_buttons(telegram_world, press: str) -> None:  # type: ignore[no-untyped-def]
    world: TelegramWorld = await telegram_world(window_s=0.3, approval={"expiry_minutes": 180})
    await world.start_daemon()
    card = await world.error_to_card()
    world.clock.offset = PAST_THE_BASELINE_S
    world.bot_api.press(APPROVER, CHAT, card.message_id, text="Approve #1")
    asked = await world.card_shows(card.message_id, "please decide")
    [change] = world.store.changes()
    assert change.status is ChangeStatus.NEEDS_HUMAN and change.commit is not None
    assert f"/revert {change.id}" in asked.text
    assert [b["text"] for b in asked.buttons()] == ["Keep", "Revert"]

    world.bot_api.press(APPROVER, CHAT, card.message_id, text=press)
    if press == "Keep":
        done = await world.card_shows(card.message_id, f"kept by telegram:{APPROVER}")
        kept = world.store.change(change.id)
        assert kept is not None and kept.status is ChangeStatus.KEPT
        assert git(world.repo, "rev-parse", "HEAD") == change.commit
        audited = [e for e in world.store.audit_log() if e.event == "change:kept_by_person"]
        assert [e.actor for e in audited] == [f"telegram:{APPROVER}"]
    else:
        done = await world.card_shows(card.message_id, f"(by telegram:{APPROVER})")
        reverted = world.store.change(change.id)
        assert reverted is not None and reverted.status is ChangeStatus.REVERTED
        assert git(world.repo, "rev-parse", "HEAD") == reverted.revert_commit
        # no Keep or Revert any more; a reverted fix offers a new diagnosis without it (issue 17.4)
        done = await until(
            lambda: (m := world.bot_api.message(CHAT, card.message_id)) and m.reply_markup is not None and m,
            what="the Diagnose again button",
        )
        assert [b["text"] for b in done.buttons()] == ["Diagnose again"]
    if press == "Keep":
        assert done.reply_markup is None
    assert "please decide" in done.text  # the verdict stays on the card
    await until(lambda: not world.bot_api.unanswered_queries(), what="the presses answered")
    assert world.bot_api.calls(ok=False) == [], world.bot_api.calls(ok=False)
