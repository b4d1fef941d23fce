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
from bot.telegram import TelegramChannel
from tests.conftest import claude_binary
from tests.fakes.fake_bot_api import BOT_USERNAME, TOKEN, FakeBotApi, StoredMessage
from tests.fakes.telegram_world import (
    ANSWER,
    APPROVER,
    CHAT,
    start_telegram_daemon,
    telegram_approval,
    traceback_lines,
    until,
)
from tests.fakes.world import fake_api_runner, in_process_claude, scratch_service

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
    if claude_binary() is None:
        pytest.fail("claude binary missing: run `make tools`")
    service = scratch_service(tmp / name, repo_dir="repo")
    config = load_config(
        service.write_config(
            healbot={"poll_interval_s": 0.1, "host_name": name},
            claude=in_process_claude(),
            tables={"approval": telegram_approval(bot_api.base_url, [APPROVER], require_addressing=True)},
        )
    )
    runner = fake_api_runner(config, fake.url, service.root / "claude", api_timeout_ms=None)
    daemon, channel = await start_telegram_daemon(config, runner, token=token)
    return Host(name, token, username, service.log, daemon, channel)


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
