"""A real `healbot run` on the Telegram channel, killed with SIGKILL from outside right after Telegram took a
card but before its answer was read (issue 17.2): after the restart exactly one copy of the card has live
buttons, and the decision still works."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.demo.fake_messages_api import FakeMessagesApi
from tests.fakes.daemon_proc import FAKE_CLAUDE_ENV, StartDaemon, healbot_run_fixture
from tests.fakes.fake_bot_api import TOKEN, FakeBotApi, StoredMessage
from tests.fakes.telegram_world import APPROVER, CHAT, telegram_approval
from tests.fakes.world import FIX_ONLY, claude_via_fake_api, scratch_service, traceback_lines
from tests.helpers import wait_until

pytestmark = [pytest.mark.real_cli, pytest.mark.slow]

__all__ = ["healbot_run_fixture"]  # the fixture


@pytest.fixture
def bot_api() -> Iterator[FakeBotApi]:
    with FakeBotApi() as api:
        yield api


def card_copies(bot_api: FakeBotApi) -> list[StoredMessage]:
    return [m for m in bot_api.bot_messages(CHAT) if "fingerprint" in m.text]


def test_a_kill_right_after_a_card_send_left_two_live_cards(
    tmp_path: Path, healbot_run: StartDaemon, bot_api: FakeBotApi
) -> None:
    service = scratch_service(tmp_path)
    with FakeMessagesApi(structured=FIX_ONLY) as fake:
        config = service.write_config(
            healbot={"poll_interval_s": 0.1},
            claude=claude_via_fake_api(fake.url),
            tables={"approval": telegram_approval(bot_api.base_url, [APPROVER])},
            health={"window_s": 0.3, "settle_s": 0.1},
        )
        env = {**FAKE_CLAUDE_ENV, "HEALBOT_TELEGRAM_TOKEN": TOKEN}
        held = bot_api.hold_answer("sendMessage", "fingerprint")
        daemon = healbot_run(config, env=env)
        daemon.wait_for("Telegram connected", 30)
        wait_until(service.db_path.exists, 20, what="the store")
        service.append(traceback_lines(service.repo))
        assert held.reached.wait(90), daemon.output()
        os.kill(daemon.proc.pid, signal.SIGKILL)  # Telegram has the card; healbot never read the answer
        daemon.wait(10)
        held.release()
        [lost] = card_copies(bot_api)

        again = healbot_run(config, env=env)
        try:
            wait_until(lambda: len(card_copies(bot_api)) == 2, 60, what="the card sent again")
            wait_until(
                lambda: bot_api.message(CHAT, lost.message_id).reply_markup is None,
                30,
                what="the lost copy's buttons retired",
            )
            live = [m for m in card_copies(bot_api) if m.reply_markup]
            assert [m.message_id for m in live] == [card_copies(bot_api)[1].message_id]
            bot_api.press(APPROVER, CHAT, live[0].message_id, text="Approve #1")
            verdict = wait_until(
                lambda: (
                    (text := bot_api.message(CHAT, live[0].message_id).text)
                    and ("kept committed" in text or "please decide" in text)
                    and text
                ),
                60,
                what="the verdict on the live card",
            )
            # the error counted before the kill is the verdict's baseline after it (issue 17.1)
            assert "kept committed" in verdict and "better" in verdict, verdict
        finally:
            assert again.stop() == 0, again.output()
        assert "retired the buttons of 1 earlier copy" in again.output()
