"""Several servers, one chat: two healbots (two tokens, two hosts) in one group of the fake Bot API, each
acting only on its own cards and on the commands addressed to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.config import load_config
from bot.daemon import Daemon
from bot.demo.fake_messages_api import FakeMessagesApi
from bot.models import ProposalStatus
from bot.runner.claude_cli import ClaudeCliRunner
from bot.store import Store
from bot.telegram import TelegramChannel, build_telegram_channel
from tests.conftest import claude_binary
from tests.fakes.fake_bot_api import BOT_USERNAME, TOKEN, FakeBotApi, StoredMessage
from tests.fakes.telegram_world import ANSWER, APP, APPROVER, CHAT, traceback_lines, until
from tests.helpers import make_repo

pytestmark = [pytest.mark.real_cli, pytest.mark.slow]

WEB2_TOKEN = "654321:FLEET-WEB2"
WEB2_USERNAME = "healbot_web2_bot"


@dataclass
class Host:
    name: str
    token: str
    username: str
    log: Path
    daemon: Daemon
    channel: TelegramChannel


@dataclass
class Fleet:
    bot_api: FakeBotApi
    web1: Host
    web2: Host

    def said(self, host: Host, contains: str, *, after: int = 0) -> list[StoredMessage]:
        return [
            m
            for m in self.bot_api.bot_messages(CHAT, token=host.token)
            if m.message_id > after and contains in m.text
        ]

    def last_id(self) -> int:
        messages = self.bot_api.bot_messages(CHAT)
        return messages[-1].message_id if messages else 0


async def start_host(
    tmp: Path, name: str, token: str, username: str, bot_api: FakeBotApi, fake: FakeMessagesApi
) -> Host:
    binary = claude_binary() or pytest.fail("claude binary missing: run `make tools`")
    root = tmp / name
    repo = make_repo(root / "repo", {"app.py": APP})
    log = root / "svc.log"
    log.write_text("starting\n")
    cfg_path = root / "healbot.toml"
    cfg_path.write_text(
        f"""
[healbot]
state_dir = "{root}/state"
poll_interval_s = 0.1
host_name = "{name}"

[claude]
binary = "{binary}"
max_turns = 3
timeout_s = 60

[approval]
channel = "telegram"
approvers = [{APPROVER}]
chats = [{CHAT}]
telegram_base_url = "{bot_api.base_url}"
require_addressing = true

[services.svc]
repo = "{repo}"
logs = ["{log}"]

[services.svc.manager]
type = "command"
restart = ["true"]
"""
    )
    config = load_config(cfg_path)
    runner = ClaudeCliRunner(
        config.claude,
        extra_env={
            "ANTHROPIC_BASE_URL": fake.url,
            "ANTHROPIC_API_KEY": "test",
            "CLAUDE_CODE_MAX_RETRIES": "0",
        },
        config_dir=root / "claude",
    )
    store = Store.open(config.db_path)
    channel = build_telegram_channel(
        config,
        store,
        token=token,
        environ={},
        min_chat_interval_s=0.0,
        poll_timeout_s=2.0,
        backoff_start_s=0.1,
    )
    daemon = Daemon(config, channel, runner=runner, store=store)
    channel.bind(daemon.pipeline)
    await daemon.start()
    return Host(name, token, username, log, daemon, channel)


@pytest.fixture(name="fleet")
async def fleet_fixture(tmp_path: Path) -> AsyncIterator[Fleet]:
    bot_api = FakeBotApi().start()
    bot_api.add_bot(WEB2_TOKEN, 654321, WEB2_USERNAME)
    fake = FakeMessagesApi(structured=ANSWER).start()
    hosts: list[Host] = []
    try:
        hosts.append(await start_host(tmp_path, "web1", TOKEN, BOT_USERNAME, bot_api, fake))
        hosts.append(await start_host(tmp_path, "web2", WEB2_TOKEN, WEB2_USERNAME, bot_api, fake))
        for host in hosts:
            await until(host.channel.app.ready.is_set, what=f"{host.name} connected")
        yield Fleet(bot_api, hosts[0], hosts[1])
    finally:
        for host in hosts:
            await host.daemon.stop()
            host.daemon.store.close()
        bot_api.stop()
        fake.stop()


async def test_each_bot_acts_only_on_its_own_cards_and_addressed_commands(fleet: Fleet) -> None:
    web1, web2, api = fleet.web1, fleet.web2, fleet.bot_api
    with web1.log.open("a") as handle:
        handle.write(traceback_lines(web1.daemon.config.services["svc"].repo))
    card = await until(lambda: fleet.said(web1, "fingerprint"), 60, "web1's card")
    assert "on web1" in card[0].text and card[0].bot.token == TOKEN

    api.press(APPROVER, CHAT, card[0].message_id, text="Reject")
    await until(lambda: not api.unanswered_queries(), what="the press answered")
    assert web1.daemon.store.pending_proposals() == []  # rejected by web1
    assert api.calls("answerCallbackQuery", token=TOKEN, ok=True)
    assert api.calls("answerCallbackQuery", token=WEB2_TOKEN) == []  # web2 never saw the press
    assert web2.daemon.store.incidents() == []  # and has nothing of web1's
    rejected = web1.daemon.store.latest_proposal(web1.daemon.store.incidents()[0].id)
    assert rejected is not None and rejected.status is ProposalStatus.REJECTED

    mark = fleet.last_id()
    api.command(APPROVER, CHAT, f"/status@{WEB2_USERNAME}")
    await until(lambda: fleet.said(web2, "on web2", after=mark), what="web2's status")
    api.command(APPROVER, CHAT, "/status")  # unaddressed: read-only, every bot answers
    await until(lambda: len(fleet.said(web2, "on web2", after=mark)) == 2, what="web2's second status")
    await until(lambda: fleet.said(web1, "on web1", after=mark), what="web1's status")
    assert len(fleet.said(web1, "healbot", after=mark)) == 1  # web1 ignored the command addressed to web2
    assert "heartbeat" in fleet.said(web2, "on web2", after=mark)[0].text

    mark = fleet.last_id()
    api.command(APPROVER, CHAT, "/pause 1h")  # unaddressed, and it changes something: a hint, no pause
    hint1 = await until(lambda: fleet.said(web1, "several healbots", after=mark), what="web1's hint")
    hint2 = await until(lambda: fleet.said(web2, "several healbots", after=mark), what="web2's hint")
    assert f"/pause@{BOT_USERNAME}" in hint1[0].text and f"/pause@{WEB2_USERNAME}" in hint2[0].text
    assert not web1.daemon.pipeline.is_paused() and not web2.daemon.pipeline.is_paused()

    api.command(APPROVER, CHAT, f"/pause@{WEB2_USERNAME} 1h")
    await until(lambda: fleet.said(web2, "paused", after=mark), what="web2 paused")
    assert web2.daemon.pipeline.is_paused() and not web1.daemon.pipeline.is_paused()
    assert not fleet.said(web1, "paused until", after=mark)
