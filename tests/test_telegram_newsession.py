"""`/newsession <service>` through Telegram: the real python-telegram-bot against the fake Bot API."""

from __future__ import annotations

import pytest

from bot.flow import sessions
from bot.models import RunStats
from tests.fakes.telegram_world import (  # noqa: F401
    APPROVER,
    CHAT,
    TelegramWorld,
    telegram_world_fixture,
)

pytestmark = [pytest.mark.real_cli, pytest.mark.slow]


async def test_newsession_forgets_the_services_claude_session(telegram_world) -> None:  # type: ignore[no-untyped-def]
    world: TelegramWorld = await telegram_world()
    await world.start_daemon()
    await world.connected()
    service = next(iter(world.pipeline.services))
    now = world.pipeline.clock.now()
    sessions.note(world.store, service, RunStats("claude-cli", 1.0, session_id="s-1"), resumed=None, now=now)

    world.bot_api.command(APPROVER, CHAT, "/newsession")
    await world.text_in(CHAT, "usage: /newsession <service>")
    world.bot_api.command(APPROVER, CHAT, "/newsession nosuch")
    await world.text_in(CHAT, "unknown service 'nosuch'")
    world.bot_api.command(APPROVER, CHAT, f"/newsession {service}")
    await world.text_in(CHAT, "its Claude session is forgotten")

    assert sessions.load(world.store, service) is None
    [cleared] = [
        e
        for e in world.store.audit_log()
        if e.event == f"setting:claude_session:{service}" and e.detail == "(cleared)"
    ]
    assert cleared.actor == f"telegram:{APPROVER}"
