"""`healbot demo --telegram`: the demo's approvals go through the real TelegramChannel (python-telegram-bot
over real HTTP) to the bundled fake Bot API on 127.0.0.1, where a scripted operator presses "Approve #1"
on each card, as a phone would. Afterwards the chat is printed, and optionally written as an HTML page.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bot.config import HealbotConfig
from bot.daemon import Daemon
from bot.demo.fake_bot_api import TOKEN, FakeBotApi, StoredMessage
from bot.demo.transcript import Transcript, render_html, render_text, transcript_from, write_html
from bot.errors import HealbotError
from bot.interfaces import Runner
from bot.pipeline import FlowResult
from bot.store import Store
from bot.telegram import build_telegram_channel

CHAT = -100777  # a group chat, as most teams run it
CHAT_TITLE = "ops · healbot"
OPERATOR = 4242
OPERATOR_NAME = "Dana (on call)"
APPROVE_LABEL = "Approve #1"
OPERATOR_POLL_S = 0.05
SETTLE_TIMEOUT_S = 20.0

# A second, longer candidate for the first incident: with three ranked candidates the diffs no longer fit
# on the card, so the channel sends them as a .diff document, which the demo wants to show.
VALIDATE_FIX = {
    "title": "Answer 400 for unknown items at the request boundary",
    "rationale": "The /checkout handler passes every name from the query string to checkout_total. "
    "Rejecting names that have no price before computing the total turns the crash into a clear client "
    "error and keeps checkout_total's contract (every item has a price) intact. It changes the answer "
    "for mixed baskets from a 500 to a 400, which clients may need to handle.",
    "risk": "medium",
    "kind": "patch",
    "edits": [
        {
            "path": "shop.py",
            "old": '                items = query.get("items", [""])[0].split(",")\n',
            "new": '                items = query.get("items", [""])[0].split(",")\n'
            "                unknown = [name for name in items if name not in PRICES]\n"
            "                if unknown:\n"
            '                    log.warning("checkout with unknown items %s", unknown)\n'
            '                    return self.reply(400, {"error": "unknown items", "items": unknown})\n',
        }
    ],
}


def scripted_answer(body: Mapping[str, Any]) -> object:
    """The console demo's scripted answers, with one more candidate for the first incident."""
    from bot.demo.run import GOOD_FIX, RESTART_FIX
    from bot.demo.run import scripted_answer as console_answer

    answer = console_answer(body)
    if "ZeroDivisionError" in json.dumps(body.get("messages", "")):
        return answer
    assert isinstance(answer, dict)
    return {**answer, "candidates": [GOOD_FIX, VALIDATE_FIX, RESTART_FIX]}


def is_card(message: StoredMessage) -> bool:
    return message.document is None and "fingerprint" in message.text


class TelegramDemo:
    """Owns the fake Bot API and the scripted operator for one demo run."""

    def __init__(self) -> None:
        self.api = FakeBotApi()
        self.pressed: dict[int, float] = {}  # card message id → when the operator pressed Approve
        self._operator: asyncio.Task[None] | None = None
        self._started = False

    def start(self) -> None:
        self.api.start()
        self._started = True
        print(
            f"telegram: the real python-telegram-bot talks to healbot's bundled FAKE Bot API on "
            f"{self.api.base_url.removesuffix('/bot')} (no token, no account); a scripted operator, "
            f"{OPERATOR_NAME}, presses {APPROVE_LABEL!r} on each card as a phone would"
        )

    def approval_toml(self) -> str:
        return (
            "[approval]\n"
            'channel = "telegram"\n'
            "expiry_minutes = 60\n"
            f"approvers = [{OPERATOR}]\n"
            f"chats = [{CHAT}]\n"
            f'telegram_base_url = "{self.api.base_url}"\n'
        )

    def build_daemon(self, config: HealbotConfig, runner: Runner) -> Daemon:
        store = Store.open(config.db_path)
        channel = build_telegram_channel(
            config,
            store,
            token=TOKEN,
            environ={},
            min_chat_interval_s=0.0,  # the fake does not rate-limit; real Telegram gets 1 s per chat
            poll_timeout_s=2.0,
            backoff_start_s=0.1,
            backoff_max_s=0.5,
        )
        daemon = Daemon(config, channel, runner=runner, store=store)
        channel.bind(daemon.pipeline)
        return daemon

    # --- the scripted operator ---------------------------------------------------------------------

    def start_operator(self) -> None:
        self._operator = asyncio.get_running_loop().create_task(self._operate(), name="demo-operator")

    async def _operate(self) -> None:
        while True:
            for message in self.api.bot_messages(CHAT):
                if message.message_id in self.pressed or not is_card(message):
                    continue
                if any(b.get("text") == APPROVE_LABEL for b in message.buttons()):
                    self.api.press(OPERATOR, CHAT, message.message_id, text=APPROVE_LABEL)
                    self.pressed[message.message_id] = time.monotonic()
                    print(
                        f"📱 {OPERATOR_NAME} pressed [{APPROVE_LABEL}] on card message {message.message_id}"
                    )
            await asyncio.sleep(OPERATOR_POLL_S)

    async def stop_operator(self) -> None:
        if self._operator is not None:
            self._operator.cancel()
            await asyncio.gather(self._operator, return_exceptions=True)
            self._operator = None

    async def settle(self, results: Sequence[FlowResult]) -> None:
        """Wait until every card shows its outcome and every press was answered (the sender is async)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while not self._settled(results):
            if time.monotonic() > deadline:
                raise HealbotError(
                    f"the Telegram cards did not show the outcomes within {SETTLE_TIMEOUT_S:.0f} s"
                )
            await asyncio.sleep(OPERATOR_POLL_S)

    def _settled(self, results: Sequence[FlowResult]) -> bool:
        if self.api.unanswered_queries():
            return False
        cards = [m for m in self.api.bot_messages(CHAT) if is_card(m)]
        for result in results:
            card = next((m for m in cards if m.text.startswith(f"#{result.incident_id} ")), None)
            if card is None or _awaits_a_press(card) or result.action not in card.text:
                return False
        return True

    def stop(self) -> None:
        if self._started:
            self.api.stop()
            self._started = False

    # --- the transcript ----------------------------------------------------------------------------

    def transcript(self) -> Transcript:
        return transcript_from(self.api, CHAT, chat_title=CHAT_TITLE, people={OPERATOR: OPERATOR_NAME})

    def print_transcript(self) -> None:
        print("\n" + render_text(self.transcript()))

    def write_html(self, path: Path, summary: Sequence[Sequence[str]]) -> None:
        page = render_html(
            self.transcript(),
            subtitle=f"healbot + {OPERATOR_NAME} · fake Bot API on 127.0.0.1 · scripted Claude answers",
            intro="healbot demo --telegram: a shop service under supervisord logs tracebacks; healbot opens "
            "incidents, asks the real claude CLI (against a scripted fake Messages API) for ranked fixes and "
            "posts a card for each. The operator approves #1; healbot commits, restarts, verifies, and keeps "
            "the first fix but reverts the second one because health got worse.",
            summary=summary,
        )
        write_html(path, page)
        print(f"transcript written to {path}")


def _awaits_a_press(card: StoredMessage) -> bool:
    """A card still asks for a decision; a reverted fix's "Diagnose again" is an offer, not a question."""
    return any(button["text"] != "Diagnose again" for button in card.buttons())
