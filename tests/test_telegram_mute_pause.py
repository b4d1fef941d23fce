"""Mutes and the pause as an operator meets them in the chat (issue 17.8), through the real
python-telegram-bot against the fake Bot API: `/diagnose` leaves muted fingerprints alone, and `/resume`
brings the cards of the incidents that opened while paused."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import pytest

from bot.models import IncidentState
from tests.fakes.telegram_world import (  # noqa: F401
    ANSWER,
    APPROVER,
    CHAT,
    TelegramWorld,
    telegram_world_fixture,
    traceback_lines,
    until,
)

pytestmark = [pytest.mark.real_cli, pytest.mark.slow]


async def test_diagnose_took_a_muted_fingerprint(telegram_world) -> None:  # type: ignore[no-untyped-def]
    world: TelegramWorld = await telegram_world()
    noisy = traceback_lines(world.repo) * 3  # the commonest error in the logs
    quiet = traceback_lines(world.repo, exc="ValueError: no price", func="price_of")
    world.append(noisy + quiet)  # before the start: only /diagnose reads them
    await world.start_daemon()
    await world.connected()
    world.bot_api.command(APPROVER, CHAT, "/diagnose svc")
    first = await world.card()
    [muted] = world.store.incidents()
    assert "KeyError" in muted.title
    world.bot_api.press(APPROVER, CHAT, first.message_id, text="Reject")
    await world.card_shows(first.message_id, "rejected by")
    world.bot_api.command(APPROVER, CHAT, f"/mute {muted.fingerprint}")
    await world.text_in(CHAT, f"muted {muted.fingerprint}")

    world.bot_api.command(APPROVER, CHAT, "/diagnose svc")
    second = await world.card(after=first.message_id)
    assert muted.fingerprint not in second.text and "ValueError" in second.text, second.text
    newest = world.store.incidents()[0]
    assert newest.fingerprint != muted.fingerprint and "ValueError" in newest.title

    world.bot_api.command(APPROVER, CHAT, f"/mute {newest.fingerprint}")
    await world.text_in(CHAT, f"muted {newest.fingerprint}")
    world.bot_api.press(APPROVER, CHAT, second.message_id, text="Reject")
    await world.card_shows(second.message_id, "rejected by")
    world.bot_api.command(APPROVER, CHAT, "/diagnose svc")
    await world.text_in(CHAT, "no errors in svc's recent logs (muted ones left out): nothing to diagnose")
    assert len(world.store.incidents()) == 2


async def test_an_incident_first_seen_while_paused_got_no_card_after_resume(telegram_world) -> None:  # type: ignore[no-untyped-def]
    """Also one whose diagnosis was under way when the pause came: it ended without a card."""
    asked, answer_now = threading.Event(), threading.Event()

    def held_answer(body: Mapping[str, Any]) -> object:
        asked.set()
        answer_now.wait(20)
        return ANSWER

    world: TelegramWorld = await telegram_world(held_answer)
    await world.start_daemon()
    await world.connected()
    world.append(traceback_lines(world.repo))
    await until(asked.is_set, 30, "the diagnosis asking Claude")
    world.bot_api.command(APPROVER, CHAT, "/pause 2h")
    await world.text_in(CHAT, "paused until")
    answer_now.set()
    [held] = world.store.incidents()
    await until(
        lambda: (
            world.store.incident(held.id).state is IncidentState.OPEN
            and not world.pipeline.is_diagnosing(held.id)
        ),
        30,
        "the diagnosis ended in the pause",
    )
    world.append(traceback_lines(world.repo, exc="ValueError: no price", func="price_of"))
    await until(lambda: len(world.store.incidents()) == 2, what="the incident first seen while paused")
    [new, _] = world.store.incidents()
    assert world.cards() == [] and world.store.pending_proposals() == []

    world.bot_api.command(APPROVER, CHAT, "/resume")
    await world.text_in(CHAT, "resumed")
    first = await world.card()  # without either error recurring
    second = await world.card(after=first.message_id)
    assert sorted([first.text[:3], second.text[:3]]) == [f"#{held.id} ", f"#{new.id} "]
    assert world.store.incident(new.id).count == 1 and world.store.incident(held.id).count == 1
