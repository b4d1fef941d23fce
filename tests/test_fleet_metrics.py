"""A fleet (issue 16): two healbot hosts (two state dirs, two bots) in one group chat, one real Prometheus
scraping both. An error on web2 gives a card from web2's bot only, and PromQL sees the incident on web2's
instance and none on web1's."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.config import load_config
from bot.daemon import Daemon
from bot.demo.fake_messages_api import FakeMessagesApi
from tests.conftest import claude_binary
from tests.fakes.fake_bot_api import TOKEN, FakeBotApi
from tests.fakes.prometheus import Prometheus, running
from tests.fakes.telegram_world import ANSWER, APPROVER, CHAT, start_telegram_daemon, telegram_approval
from tests.fakes.world import fake_api_runner, in_process_claude, scratch_service, traceback_lines
from tests.helpers import free_port, until

pytestmark = [pytest.mark.real_cli, pytest.mark.slow]

WEB2_TOKEN = "654321:FLEET-WEB2"


async def start_host(tmp: Path, name: str, token: str, bot_api: FakeBotApi, fake: FakeMessagesApi) -> Daemon:
    service = scratch_service(tmp / name, repo_dir="repo")
    config = load_config(
        service.write_config(
            healbot={"poll_interval_s": 0.1, "host_name": name},
            claude=in_process_claude(),
            tables={
                "approval": telegram_approval(bot_api.base_url, [APPROVER], require_addressing=True),
                "metrics": {"enabled": True, "port": free_port()},
            },
        )
    )
    runner = fake_api_runner(config, fake.url, service.root / "claude", api_timeout_ms=None)
    daemon, _channel = await start_telegram_daemon(config, runner, token=token)
    return daemon


async def test_one_prometheus_scrapes_two_hosts_that_share_one_chat(tmp_path: Path) -> None:
    if claude_binary() is None:
        pytest.fail("claude binary missing: run `make tools`")
    bot_api = FakeBotApi().start()
    bot_api.add_bot(WEB2_TOKEN, 654321, "healbot_web2_bot")
    fake = FakeMessagesApi(structured=ANSWER).start()
    hosts: list[Daemon] = []
    try:
        hosts.append(await start_host(tmp_path, "web1", TOKEN, bot_api, fake))
        hosts.append(await start_host(tmp_path, "web2", WEB2_TOKEN, bot_api, fake))
        web1, web2 = hosts
        targets = {}
        for daemon in hosts:
            metrics = daemon.observability.metrics
            assert metrics is not None
            targets[daemon.config.host_name] = f"127.0.0.1:{metrics.port}"
        prometheus = await asyncio.to_thread(Prometheus, tmp_path / "prometheus", list(targets.values()))
        with running(prometheus):
            await until(lambda: len(prometheus.targets_up()) == 2, 60, "Prometheus scraping both hosts")
            with web2.config.services["svc"].logs[0].open("a") as handle:
                handle.write(traceback_lines(web2.config.services["svc"].repo))
            card = await until(
                lambda: [m for m in bot_api.bot_messages(CHAT) if "fingerprint" in m.text], 60, "web2's card"
            )
            assert card[0].bot.token == WEB2_TOKEN and "on web2" in card[0].text

            def by_instance() -> dict[str, float]:
                result = prometheus.query("sum by (instance) (healbot_incidents_opened_total)")
                return {r["metric"]["instance"]: float(r["value"][1]) for r in result}

            seen = await until(lambda: by_instance() or None, 30, "the incident in Prometheus")
            assert seen == {targets["web2"]: 1.0}  # web1 has none
            built = await asyncio.to_thread(prometheus.query, "healbot_build_info")
            assert {r["metric"]["instance"] for r in built} == set(targets.values())
        assert web1.store.incidents() == []
    finally:
        for daemon in hosts:
            await daemon.stop()
            daemon.store.close()
        bot_api.stop()
        fake.stop()
