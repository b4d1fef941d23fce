"""The "before" window of a verdict survives a daemon restart (issue 17.1): three errors, a card, a stop
and a start of the daemon, then Approve #1 on the card, through the real python-telegram-bot against the
fake Bot API. The verdict is the one a daemon that kept running gives."""

from __future__ import annotations

import pytest

from bot.models import ChangeStatus, Verdict
from tests.fakes.telegram_world import (  # noqa: F401
    APPROVER,
    CHAT,
    TelegramWorld,
    telegram_world_fixture,
    traceback_lines,
    until,
)

pytestmark = [pytest.mark.real_cli, pytest.mark.slow]


@pytest.mark.parametrize("restart", [False, True], ids=["running", "restarted"])
async def test_a_restart_erased_the_before_baseline_so_a_good_fix_was_not_kept(
    telegram_world, restart: bool
) -> None:  # type: ignore[no-untyped-def]
    world: TelegramWorld = await telegram_world(window_s=0.5)
    await world.start_daemon()
    await world.connected()
    world.append(traceback_lines(world.repo) * 3)
    card = await world.card()
    await until(lambda: world.store.incidents()[0].count == 3, what="three errors counted")
    if restart:
        await world.stop_daemon()
        await world.start_daemon()
        await world.connected()

    world.bot_api.press(APPROVER, CHAT, card.message_id, text="Approve #1")
    done = await until(
        lambda: (m := world.bot_api.message(CHAT, card.message_id)) and "kept" in m.text and m,
        30,
        "the verdict on the card",
    )
    assert "kept committed" in done.text and "better" in done.text, done.text
    assert "please decide" not in done.text
    [change] = world.store.changes()
    assert change.status is ChangeStatus.KEPT
    [outcome] = world.store.outcomes(change.id)
    [incident] = world.store.incidents()
    assert outcome.verdict is Verdict.BETTER
    assert outcome.before.errors_by_fingerprint == ((incident.fingerprint, 3),)
    assert outcome.after.errors_total == 0
