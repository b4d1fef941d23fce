"""Wiring and lifecycle: config → store, runner, channel, services → pipeline, on one asyncio loop."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot import registry
from bot.clock import SystemClock
from bot.config import HealbotConfig, ServiceConfig
from bot.interfaces import ApprovalChannel, Clock, HealContext, Runner
from bot.pipeline import Pipeline, ServiceRuntime
from bot.runner.claude_cli import ClaudeCliRunner
from bot.sources import build_sources
from bot.store import Store

log = logging.getLogger("healbot.daemon")

EXPIRY_CHECK_S = 30.0


def heal_context(cfg: ServiceConfig) -> HealContext:
    return HealContext(
        service=cfg.name,
        repo=str(cfg.repo),
        allowed_paths=cfg.allowed_paths,
        check_command=cfg.check_command,
        check_timeout_s=cfg.check_timeout_s,
        runbooks=dict(cfg.runbooks),
    )


def build_services(config: HealbotConfig) -> dict[str, ServiceRuntime]:
    services: dict[str, ServiceRuntime] = {}
    for name, cfg in config.services.items():
        manager = registry.service_manager(cfg.manager_type, name, cfg.manager_options, str(config.path))
        sources = build_sources(cfg, manager)
        services[name] = ServiceRuntime(cfg=cfg, manager=manager, sources=sources, heal_ctx=heal_context(cfg))
    return services


def build_runner(config: HealbotConfig, *, extra_env: Mapping[str, str] | None = None) -> ClaudeCliRunner:
    return ClaudeCliRunner(config.claude, extra_env=extra_env, config_dir=None)


class Daemon:
    """Owns the loop's periodic jobs. `start` returns once scanning runs; `stop` ends everything it began."""

    def __init__(
        self,
        config: HealbotConfig,
        channel: ApprovalChannel,
        *,
        runner: Runner | None = None,
        clock: Clock | None = None,
        store: Store | None = None,
    ) -> None:
        self.config = config
        self.store = store or Store.open(config.db_path)
        self.runner = runner or build_runner(config)
        self.channel = channel
        self.pipeline = Pipeline(
            config,
            self.store,
            self.runner,
            channel,
            build_services(config),
            registry.all_healers(),
            clock=clock or SystemClock(),
        )
        self._scheduler: AsyncIOScheduler | None = None
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        await self.channel.start(self.pipeline.decide)
        for note in await self.pipeline.recover():
            log.warning("recovered: %s", note)
        await self.pipeline.poll_once()  # first run: cursors start at the end of each file
        scheduler = AsyncIOScheduler()
        scheduler.add_job(
            self.pipeline.poll_once,
            "interval",
            seconds=self.config.poll_interval_s,
            max_instances=1,
            coalesce=True,
            id="poll",
        )
        scheduler.add_job(
            self.pipeline.expire_due,
            "interval",
            seconds=EXPIRY_CHECK_S,
            max_instances=1,
            coalesce=True,
            id="expiry",
        )
        scheduler.start()
        self._scheduler = scheduler

    async def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        await self.pipeline.cancel_all()
        await self.channel.stop()
        self._stopped.set()

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopped.set)
        await self.start()
        log.info(
            "healbot running: %d service(s), state in %s", len(self.config.services), self.config.db_path
        )
        await self._stopped.wait()
        await self.stop()
        self.store.close()


def state_dir_problem(path: Path) -> str | None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".healbot-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        return f"state_dir {path} is not writable: {exc}"
    return None
