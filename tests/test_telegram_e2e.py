"""End-to-end through Telegram: the real daemon and python-telegram-bot against the fake Bot API."""

from __future__ import annotations

import logging

import pytest

from bot.models import ChangeStatus, IncidentState
from tests.fakes.fake_bot_api import BOT_USERNAME
from tests.fakes.telegram_world import (  # noqa: F401
    APPROVER,
    CHAT,
    SECOND_APPROVER,
    STRANGER,
    TelegramWorld,
    telegram_world_fixture,
    traceback_lines,
    until,
)
from tests.helpers import git

pytestmark = [pytest.mark.real_cli, pytest.mark.slow]


async def test_error_to_card_to_approve_to_kept(telegram_world) -> None:  # type: ignore[no-untyped-def]
    world: TelegramWorld = await telegram_world()
    await world.start_daemon()
    await world.connected()
    card = await world.error_to_card()
    assert "svc" in card.text and "KeyError" in card.text
    labels = [b["text"] for b in card.buttons()]
    assert labels == ["Approve #1", "Approve #2", "Reject", "Details", "Snooze 1 h"]
    assert "+    return PRICES.get(name, 0)" in card.text  # the diff fits inline

    world.bot_api.press(APPROVER, CHAT, card.message_id, text="Approve #1")
    done = await world.card_shows(card.message_id, "kept committed")
    assert done.reply_markup is None
    assert "committed" in done.text and "verifying" in done.text
    [change] = world.store.changes()
    assert change.status is ChangeStatus.KEPT and change.approved_by == f"telegram:{APPROVER}"
    assert git(world.repo, "rev-parse", "HEAD") == change.commit
    answers = world.bot_api.calls("answerCallbackQuery", ok=True)
    assert len(answers) == 1 and "approved #1" in answers[0].params["text"]
    assert world.bot_api.unanswered_queries() == []
    assert world.bot_api.calls(ok=False) == [], world.bot_api.calls(ok=False)


async def test_reject_closes_the_card_and_applies_nothing(telegram_world) -> None:  # type: ignore[no-untyped-def]
    world: TelegramWorld = await telegram_world()
    await world.start_daemon()
    card = await world.error_to_card()
    world.bot_api.press(APPROVER, CHAT, card.message_id, text="Reject")
    closed = await world.card_shows(card.message_id, f"rejected by telegram:{APPROVER}")
    assert closed.reply_markup is None
    assert git(world.repo, "rev-list", "--count", "HEAD") == "1"
    [incident] = world.store.incidents()
    assert incident.state is IncidentState.REJECTED
    await until(lambda: not world.bot_api.unanswered_queries(), what="the press answered")


async def test_a_press_after_expiry_applies_nothing_and_says_expired(telegram_world) -> None:  # type: ignore[no-untyped-def]
    world: TelegramWorld = await telegram_world()
    await world.start_daemon()
    card = await world.error_to_card()
    world.clock.offset = 2 * 3600  # past the 60 min expiry
    world.bot_api.press(APPROVER, CHAT, card.message_id, text="Approve #1")
    answer = await until(lambda: world.bot_api.calls("answerCallbackQuery", ok=True), what="an answer")
    assert "expired" in answer[0].params["text"]
    closed = await world.card_shows(card.message_id, "expired without a decision")
    assert closed.reply_markup is None
    assert git(world.repo, "rev-list", "--count", "HEAD") == "1"
    assert world.store.changes() == []


async def test_a_stale_approval_after_a_manual_commit_re_diagnoses(telegram_world) -> None:  # type: ignore[no-untyped-def]
    world: TelegramWorld = await telegram_world()
    await world.start_daemon()
    card = await world.error_to_card()
    (world.repo / "NOTES.md").write_text("operator's own commit\n")
    git(world.repo, "add", "NOTES.md")
    git(world.repo, "commit", "-q", "-m", "operator change")
    manual_head = git(world.repo, "rev-parse", "HEAD")
    world.bot_api.press(APPROVER, CHAT, card.message_id, text="Approve #1")
    answer = await until(lambda: world.bot_api.calls("answerCallbackQuery", ok=True), what="an answer")
    assert "the repo moved" in answer[0].params["text"] and "re-diagnosing" in answer[0].params["text"]
    fresh = await world.card(after=card.message_id)
    assert fresh.reply_markup is not None
    old = await world.card_shows(card.message_id, "the repo moved")
    assert old.reply_markup is None  # the stale card lost its buttons
    assert git(world.repo, "rev-parse", "HEAD") == manual_head
    assert world.store.changes() == []


@pytest.mark.parametrize("work", ["edit", "staged", "untracked where the fix writes"])
async def test_approve_again_had_no_way_to_after_a_dirty_tree_refusal(telegram_world, work: str) -> None:  # type: ignore[no-untyped-def]
    """Issue 12.6: uncommitted work where the fix goes refuses the press before the approval is taken,
    so the card keeps its buttons and a press after the tree is clean applies (digest and HEAD checked)."""
    world: TelegramWorld = await telegram_world(window_s=0.3)
    await world.start_daemon()
    card = await world.error_to_card()
    app = world.repo / "app.py"
    original = app.read_text()
    if work == "untracked where the fix writes":
        git(world.repo, "rm", "-q", "--cached", "app.py")
    else:
        app.write_text(original + "# the operator's own work in progress\n")
        if work == "staged":
            git(world.repo, "add", "app.py")
    world.bot_api.press(APPROVER, CHAT, card.message_id, text="Approve #1")
    answer = await until(lambda: world.bot_api.calls("answerCallbackQuery", ok=True), what="an answer")
    said = answer[0].params["text"]
    assert "uncommitted changes" in said and "press Approve again" in said, said
    assert world.store.changes() == [] and world.store.pending_proposals()
    assert world.bot_api.message(CHAT, card.message_id).reply_markup is not None  # still approvable
    if work == "untracked where the fix writes":
        git(world.repo, "add", "app.py")
    else:
        git(world.repo, "checkout", "HEAD", "--", "app.py")
    assert git(world.repo, "status", "--porcelain") == ""
    world.bot_api.press(APPROVER, CHAT, card.message_id, text="Approve #1")
    await world.card_shows(card.message_id, "→ committed")
    [change] = world.store.changes()
    assert change.commit and git(world.repo, "rev-parse", "HEAD") == change.commit


async def test_a_second_press_by_another_approver_says_who_acted(telegram_world) -> None:  # type: ignore[no-untyped-def]
    world: TelegramWorld = await telegram_world()
    await world.start_daemon()
    card = await world.error_to_card()
    world.bot_api.press(APPROVER, CHAT, card.message_id, text="Reject")
    world.bot_api.press(SECOND_APPROVER, CHAT, card.message_id, text="Approve #1")  # a stale client's tap
    answers = await until(
        lambda: (
            len(world.bot_api.calls("answerCallbackQuery", ok=True)) == 2
            and world.bot_api.calls("answerCallbackQuery", ok=True)
        ),
        what="two answers",
    )
    assert f"already rejected by telegram:{APPROVER}" in answers[1].params["text"]
    assert world.store.changes() == []


async def test_strangers_are_ignored_audited_and_told_nothing(telegram_world) -> None:  # type: ignore[no-untyped-def]
    world: TelegramWorld = await telegram_world()
    await world.start_daemon()
    card = await world.error_to_card()
    world.bot_api.press(STRANGER, CHAT, card.message_id, text="Approve #1")
    world.bot_api.command(STRANGER, CHAT, "/incidents")
    world.bot_api.command(STRANGER, STRANGER, "/status")  # in a private chat with the bot
    world.bot_api.command(APPROVER, CHAT, "/incidents")  # updates are handled in order: a barrier
    reply = await world.text_in(CHAT, "open incidents", after=card.message_id)
    assert (
        reply.reply_to is not None and world.bot_api.message(CHAT, reply.reply_to).from_user["id"] == APPROVER
    )
    assert world.bot_api.sent_to(STRANGER) == []
    replies_in_chat = [m for m in world.bot_api.bot_messages(CHAT) if m.message_id > card.message_id]
    assert replies_in_chat == [reply]
    [answer] = world.bot_api.calls("answerCallbackQuery", ok=True)
    assert answer.params["text"] == "not allowed"
    denied = [e for e in world.store.audit_log() if e.event == "telegram_denied"]
    assert [e.actor for e in denied] == [f"telegram:{STRANGER}"] * 3
    assert world.store.changes() == [] and git(world.repo, "rev-list", "--count", "HEAD") == "1"
    assert world.bot_api.message(CHAT, card.message_id).reply_markup is not None  # still pending


async def test_telegram_down_then_back_delivers_the_backlog_once_even_across_a_restart(
    telegram_world,
) -> None:  # type: ignore[no-untyped-def]
    world: TelegramWorld = await telegram_world()
    world.bot_api.go_down("refuse")
    await world.start_daemon()
    world.append(traceback_lines(world.repo))
    await until(world.store.pending_proposals, 30, "a proposal while Telegram is down")
    assert world.bot_api.bot_messages(CHAT) == []
    world.bot_api.come_back()
    card = await world.card()
    await world.stop_daemon()  # a daemon restart: the pending proposal is presented again on start
    await world.start_daemon()
    await world.connected()
    world.bot_api.command(APPROVER, CHAT, "/status")
    await world.text_in(CHAT, "pending approvals 1", after=card.message_id)
    cards = [m for m in world.bot_api.bot_messages(CHAT) if "fingerprint" in m.text]
    assert [m.message_id for m in cards] == [card.message_id]

    world.bot_api.go_down("502")
    await world.pipeline.channel.notify("a note written while Telegram answers 502")
    await until(lambda: world.bot_api.calls("sendMessage", ok=False), what="a failed send")
    world.bot_api.come_back()
    await world.text_in(CHAT, "a note written while Telegram answers 502")
    notes = [m for m in world.bot_api.bot_messages(CHAT) if "a note written" in m.text]
    assert len(notes) == 1


async def test_diagnose_command_brings_a_card_and_bad_arguments_get_usage(telegram_world) -> None:  # type: ignore[no-untyped-def]
    world: TelegramWorld = await telegram_world()
    world.append(traceback_lines(world.repo))  # before the start: the cursor starts after it
    await world.start_daemon()
    await world.connected()
    world.bot_api.command(APPROVER, CHAT, "/diagnose")
    usage = await world.text_in(CHAT, "usage: /diagnose <service>")
    assert "svc" in usage.text and "\n" not in usage.text
    world.bot_api.command(APPROVER, CHAT, "/diagnose nosuch")
    await world.text_in(CHAT, "unknown service 'nosuch'")
    world.bot_api.command(APPROVER, CHAT, "/diagnose svc")
    await world.text_in(CHAT, "diagnosing svc (read-only)")
    card = await world.card()
    assert "Approve #1" in [b["text"] for b in card.buttons()]
    await world.text_in(CHAT, "candidate(s)")
    assert git(world.repo, "rev-list", "--count", "HEAD") == "1"  # read-only


@pytest.mark.parametrize("command", ["/foo", "/foo some args", f"/foo@{BOT_USERNAME}", "/Status_not"])
async def test_unknown_command_got_no_reply(telegram_world, command: str) -> None:  # type: ignore[no-untyped-def]
    """Issue 12.5: an unknown command gets the one-line usage reply that bad arguments get."""
    world: TelegramWorld = await telegram_world()
    await world.start_daemon()
    await world.connected()
    world.bot_api.command(APPROVER, CHAT, command)
    reply = await world.text_in(CHAT, "usage: ")
    assert "unknown command /" in reply.text and "/diagnose" in reply.text and "\n" not in reply.text


async def test_a_telegram_outage_logged_a_traceback_per_failed_poll(
    telegram_world, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    """Issue 17.7: one line when polling starts failing, one when it works again, no tracebacks."""
    caplog.set_level(logging.WARNING)
    world: TelegramWorld = await telegram_world()
    await world.start_daemon()
    await world.connected()
    world.bot_api.go_down("502")
    await until(lambda: len(world.bot_api.calls("getUpdates", ok=False)) >= 3, 30, "three failed polls")
    world.bot_api.come_back()
    await until(
        lambda: any("polling works again" in r.getMessage() for r in caplog.records), 30, "the recovery line"
    )
    polling = [r.getMessage() for r in caplog.records if "polling" in r.getMessage().lower()]
    assert len(polling) == 2, polling
    assert polling[0].startswith("Telegram polling failed (NetworkError: Bad Gateway"), polling
    assert polling[1].startswith("Telegram polling works again after "), polling
    assert not [r for r in caplog.records if r.exc_info], [
        r.getMessage() for r in caplog.records if r.exc_info
    ]


async def test_unknown_command_for_another_bot_gets_no_reply(telegram_world) -> None:  # type: ignore[no-untyped-def]
    world: TelegramWorld = await telegram_world()
    await world.start_daemon()
    await world.connected()
    world.bot_api.command(APPROVER, CHAT, "/foo@some_other_bot")
    world.bot_api.command(APPROVER, CHAT, "/help")  # answered after the first one was processed
    await world.text_in(CHAT, "what healbot can do here")
    assert not [m for m in world.bot_api.bot_messages(CHAT) if "unknown command" in m.text]


async def test_pause_stops_proposals_and_resume_lifts_it(telegram_world) -> None:  # type: ignore[no-untyped-def]
    world: TelegramWorld = await telegram_world()
    await world.start_daemon()
    await world.connected()
    world.bot_api.command(APPROVER, CHAT, "/pause soon")
    await world.text_in(CHAT, "usage: /pause [duration]")
    world.bot_api.command(APPROVER, CHAT, "/pause 2h")
    await world.text_in(CHAT, "paused until")
    assert world.pipeline.is_paused()
    world.append(traceback_lines(world.repo))
    await until(world.store.incidents, what="the incident is still detected")
    world.bot_api.command(APPROVER, CHAT, "/status")
    status = await world.text_in(CHAT, "PAUSED")
    assert "open incidents 1" in status.text
    assert world.cards() == [] and world.store.pending_proposals() == []
    world.bot_api.command(APPROVER, CHAT, "/resume")
    await world.text_in(CHAT, "resumed")
    assert not world.pipeline.is_paused()
    [event] = [
        e for e in world.store.audit_log() if e.event == "setting:paused_until" and e.detail != "(cleared)"
    ]
    assert event.actor == f"telegram:{APPROVER}"


async def test_revert_command_asks_to_confirm_then_reverts(telegram_world) -> None:  # type: ignore[no-untyped-def]
    world: TelegramWorld = await telegram_world(window_s=0.3)
    await world.start_daemon()
    card = await world.error_to_card()
    world.bot_api.press(APPROVER, CHAT, card.message_id, text="Approve #1")
    await world.card_shows(card.message_id, "kept committed")
    [change] = world.store.changes()
    world.bot_api.command(APPROVER, CHAT, "/revert x")
    await world.text_in(CHAT, "usage: /revert <change id>")
    world.bot_api.command(APPROVER, CHAT, f"/revert {change.id}")
    confirm = await world.text_in(CHAT, f"revert change {change.id}")
    world.bot_api.command(APPROVER, CHAT, f"/revert {change.id}")  # asked twice: the second goes stale
    stale = await world.text_in(CHAT, f"revert change {change.id}", after=confirm.message_id)
    assert git(world.repo, "rev-parse", "HEAD") == change.commit  # nothing yet
    world.bot_api.press(APPROVER, CHAT, confirm.message_id, text="Revert")
    done = await world.card_shows(confirm.message_id, "reverted")
    assert done.reply_markup is None
    reverted = world.store.change(change.id)
    assert reverted is not None and reverted.status is ChangeStatus.REVERTED
    assert git(world.repo, "rev-parse", "HEAD") == reverted.revert_commit
    await world.card_shows(card.message_id, f"(by telegram:{APPROVER})")  # the card says so too

    # issue 17.8: the stale button toasted "reverting…"; it says "already reverted" and changes nothing
    world.bot_api.press(APPROVER, CHAT, stale.message_id, text="Revert")
    answer = await until(
        lambda: (a := world.bot_api.calls("answerCallbackQuery", ok=True)) and len(a) == 3 and a[-1],
        what="the stale press answered",
    )
    assert "already reverted" in answer.params["text"] and "reverting" not in answer.params["text"]
    await until(lambda: world.bot_api.message(CHAT, stale.message_id).reply_markup is None, what="retired")
    assert world.store.change(change.id) == reverted
    assert git(world.repo, "rev-parse", "HEAD") == reverted.revert_commit
    # issue 17.8: a plain error was prefixed "usage:"
    world.bot_api.command(APPROVER, CHAT, f"/revert {change.id}")
    again = await world.text_in(CHAT, "was already reverted", after=stale.message_id)
    assert "usage" not in again.text
    world.bot_api.command(APPROVER, CHAT, "/history")
    history = await world.text_in(CHAT, "recent changes")
    assert f"change {change.id}" in history.text and "reverted" in history.text


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
async def test_flood_control_is_honoured(telegram_world) -> None:  # type: ignore[no-untyped-def]
    world: TelegramWorld = await telegram_world()
    await world.start_daemon()
    await world.connected()
    world.bot_api.fail_next("sendMessage", 429, retry_after=1)
    card = await world.error_to_card()
    sends = world.bot_api.calls("sendMessage")
    [refused] = [c for c in sends if c.status == 429]
    delivered = next(c for c in sends if c.ok and c.result["message_id"] == card.message_id)
    assert delivered.at - refused.at >= 1.0
    assert len(world.cards()) == 1


BIG_NEW = "".join(f"    # line {i}: {'x' * 60}\n" for i in range(120))


async def test_a_big_diff_goes_as_a_document_and_details_answer_in_the_thread(telegram_world) -> None:  # type: ignore[no-untyped-def]
    from tests.fakes.telegram_world import FIX, RESTART

    big = dict(
        FIX,
        edits=[
            {
                "path": "app.py",
                "old": "    return PRICES[name]\n",
                "new": BIG_NEW + "    return PRICES.get(name, 0)\n",
            }
        ],
    )
    world: TelegramWorld = await telegram_world(answer={"summary": "s", "candidates": [big, RESTART]})
    await world.start_daemon()
    card = await world.error_to_card()
    assert len(card.text) <= 4096 and "line 119" not in card.text
    assert "full diff attached" in card.text
    await until(lambda: world.bot_api.calls("sendDocument", ok=True), what="the diff document")
    [doc] = world.bot_api.calls("sendDocument", ok=True)
    assert b"line 119" in doc.files["document"] and doc.params["_document_filename"].endswith(".diff")
    assert doc.result["reply_to_message"]["message_id"] == card.message_id
    world.bot_api.press(APPROVER, CHAT, card.message_id, text="Details")
    await until(lambda: len(world.bot_api.calls("sendDocument", ok=True)) == 2, what="details as a document")
    await until(lambda: not world.bot_api.unanswered_queries(), what="the press answered")
    assert world.bot_api.calls(ok=False) == []


async def test_a_reply_to_a_card_resumes_the_claude_session(telegram_world) -> None:  # type: ignore[no-untyped-def]
    from tests.fakes.telegram_world import ANSWER

    def answer(body):  # type: ignore[no-untyped-def]
        text = str(body)
        return {"answer": "Because pear is not in PRICES."} if "follow-up question" in text else ANSWER

    world: TelegramWorld = await telegram_world(answer=answer)
    await world.start_daemon()
    card = await world.error_to_card()
    world.bot_api.reply(APPROVER, CHAT, card.message_id, "why does pear fail?")
    reply = await world.text_in(CHAT, "Because pear is not in PRICES.", timeout=30)
    assert "why does pear fail?" in reply.text
    [followup] = [r for r in world.messages_api.message_requests() if "follow-up question" in r.text()]
    assert "why does pear fail" in followup.text()
    assert len(followup.body["messages"]) > 1  # --resume: the diagnosis turns come along
    assert git(world.repo, "rev-list", "--count", "HEAD") == "1"
