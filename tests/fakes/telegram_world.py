"""A whole healbot world driven through Telegram: a real git repo and log file, the real claude binary
against the fake Messages API, the real daemon and pipeline, and the real python-telegram-bot talking
HTTP to the fake Bot API. Tests act as users through the fake and wait on its journal."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bot.config import HealbotConfig, load_config
from bot.daemon import Daemon
from bot.demo.fake_messages_api import FakeMessagesApi
from bot.interfaces import Clock, Runner
from bot.pipeline import Pipeline
from bot.runner.claude_cli import ClaudeCliRunner
from bot.store import Store
from bot.telegram import TelegramChannel, build_telegram_channel
from tests.conftest import claude_binary
from tests.fakes.fake_bot_api import TOKEN, FakeBotApi, StoredMessage
from tests.fakes.world import (
    APP,  # noqa: F401  (re-exported: the fleet test and the Telegram bench take it from here)
    FIX,
    RESTART,
    ShiftedClock,
    TomlValue,
    fake_api_runner,
    healbot_toml,
    in_process_claude,
    scratch_service,
    traceback_lines,
)
from tests.helpers import until

T = TypeVar("T")

APPROVER = 111
SECOND_APPROVER = 222
STRANGER = 999
CHAT = -100500

ANSWER = {"summary": "total() looks up unknown items with PRICES[name]", "candidates": [FIX, RESTART]}


def telegram_approval(bot_url: str, approvers: list[int], **options: TomlValue) -> dict[str, TomlValue]:
    return {
        "channel": "telegram",
        "approvers": approvers,
        "chats": [CHAT],
        "telegram_base_url": bot_url,
        **options,
    }


def config_text(
    tmp: Path,
    repo: Path,
    log: Path,
    bot_url: str,
    window_s: float,
    approval: Mapping[str, TomlValue] | None = None,
) -> str:
    return healbot_toml(
        tmp / "state",
        repo,
        [log],
        healbot={"poll_interval_s": 0.1},
        claude=in_process_claude(idle_timeout_s=20),
        tables={"approval": telegram_approval(bot_url, [APPROVER, SECOND_APPROVER], **(approval or {}))},
        health={"process": False, "window_s": window_s, "settle_s": 0.1},
    )


async def start_telegram_daemon(
    config: HealbotConfig, runner: Runner, *, token: str, clock: Clock | None = None, **channel_options: float
) -> tuple[Daemon, TelegramChannel]:
    """A daemon as `healbot run` would build it, with the Telegram channel (fast polls, no chat throttle)."""
    store = Store.open(config.db_path)
    channel = build_telegram_channel(
        config,
        store,
        token=token,
        environ={},
        clock=clock,
        min_chat_interval_s=0.0,
        poll_timeout_s=2.0,
        backoff_start_s=0.1,
        **channel_options,
    )
    daemon = Daemon(config, channel, runner=runner, clock=clock, store=store)
    channel.bind(daemon.pipeline)
    await daemon.start()
    return daemon, channel


@dataclass
class TelegramWorld:
    tmp: Path
    repo: Path
    log: Path
    config: HealbotConfig
    bot_api: FakeBotApi
    messages_api: FakeMessagesApi
    runner: ClaudeCliRunner
    clock: ShiftedClock
    daemon: Daemon | None = None
    channel: TelegramChannel | None = None

    @property
    def pipeline(self) -> Pipeline:
        assert self.daemon is not None
        return self.daemon.pipeline

    @property
    def store(self) -> Store:
        assert self.daemon is not None
        return self.daemon.store

    async def start_daemon(self) -> Daemon:
        """A daemon as `healbot run` would build it, with the Telegram channel (again after a stop)."""
        daemon, channel = await start_telegram_daemon(
            self.config, self.runner, token=TOKEN, clock=self.clock, backoff_max_s=0.5
        )
        self.daemon, self.channel = daemon, channel
        return daemon

    async def stop_daemon(self) -> None:
        if self.daemon is not None:
            await self.daemon.stop()
            self.daemon.store.close()
            self.daemon = None
            self.channel = None

    async def connected(self) -> None:
        assert self.channel is not None
        await until(self.channel.app.ready.is_set, what="the bot connected to the fake Bot API")

    def append(self, text: str) -> None:
        with self.log.open("a") as handle:
            handle.write(text)

    def cards(self) -> list[StoredMessage]:
        return [m for m in self.bot_api.bot_messages(CHAT) if m.reply_markup and "fingerprint" in m.text]

    async def card(self, *, after: int = 0, timeout: float = 30.0) -> StoredMessage:
        """Wait for an incident card (a message with 'fingerprint' in it) newer than message `after`."""

        def found() -> StoredMessage | None:
            for m in self.bot_api.bot_messages(CHAT):
                if m.message_id > after and "fingerprint" in m.text:
                    return m
            return None

        return await until(found, timeout, "an incident card")

    async def text_in(
        self, chat_id: int, contains: str, *, after: int = 0, timeout: float = 20.0
    ) -> StoredMessage:
        def found() -> StoredMessage | None:
            for m in self.bot_api.bot_messages(chat_id):
                if m.message_id > after and contains in m.text:
                    return m
            return None

        return await until(found, timeout, f"a message with {contains!r}")

    async def card_shows(self, message_id: int, contains: str, timeout: float = 30.0) -> StoredMessage:
        return await until(
            lambda: (m := self.bot_api.message(CHAT, message_id)) and contains in m.text and m,
            timeout,
            f"card {message_id} to show {contains!r}",
        )

    async def error_to_card(self) -> StoredMessage:
        self.append(traceback_lines(self.repo))
        return await self.card()


@pytest.fixture(name="telegram_world")
async def telegram_world_fixture(tmp_path: Path) -> Any:
    worlds: list[TelegramWorld] = []

    async def make(
        answer: object | Callable[[Mapping[str, Any]], object] = None,
        window_s: float = 1.0,
        approval: Mapping[str, TomlValue] | None = None,
    ) -> TelegramWorld:
        """`approval`: more [approval] keys (expiry_minutes, …)."""
        if claude_binary() is None:
            pytest.fail("claude binary missing: run `make tools`")
        service = scratch_service(tmp_path)
        repo, log = service.repo, service.log
        bot_api = FakeBotApi().start()
        messages_api = FakeMessagesApi(structured=answer if answer is not None else ANSWER).start()
        cfg_path = tmp_path / "healbot.toml"
        cfg_path.write_text(config_text(tmp_path, repo, log, bot_api.base_url, window_s, approval or {}))
        config = load_config(cfg_path)
        runner = fake_api_runner(config, messages_api.url, tmp_path / "claude")
        world = TelegramWorld(tmp_path, repo, log, config, bot_api, messages_api, runner, ShiftedClock())
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        await world.stop_daemon()
        world.bot_api.stop()
        world.messages_api.stop()
