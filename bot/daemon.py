"""Wiring and lifecycle: config → store, runner, channel, services → pipeline, on one asyncio loop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Mapping
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot import registry, sd_notify
from bot.clock import SystemClock
from bot.config import HealbotConfig, ServiceConfig, load_config
from bot.errors import HealbotError, StoreError
from bot.heartbeat import Heartbeat, heartbeat_path, ping, ping_target, source_states
from bot.interfaces import ApprovalChannel, Clock, HealContext, Runner, SandboxSettings
from bot.observability import Observability
from bot.pipeline import Pipeline, ServiceRuntime
from bot.reload import plan_reload
from bot.runner import children
from bot.runner.claude_cli import ClaudeCliRunner
from bot.runner.messages_api import MessagesApiRunner
from bot.sources import build_sources, expand_sources
from bot.sources.watch import LogWatcher, file_paths
from bot.store import Store
from bot.tasks import cancel_and_wait

log = logging.getLogger("healbot.daemon")

EXPIRY_CHECK_S = 30.0
BACKUP_CHECK_S = 3600.0  # the backup itself is daily; this only notices a new day


def heal_context(cfg: ServiceConfig, sandbox: SandboxSettings | None = None) -> HealContext:
    return HealContext(
        service=cfg.name,
        repo=str(cfg.repo),
        allowed_paths=cfg.allowed_paths,
        check_command=cfg.check_command,
        check_timeout_s=cfg.check_timeout_s,
        runbooks=dict(cfg.runbooks),
        check_read_only_paths=cfg.check_read_only_paths,
        sandbox=sandbox or SandboxSettings(),
    )


def build_services(config: HealbotConfig) -> dict[str, ServiceRuntime]:
    services: dict[str, ServiceRuntime] = {}
    for name, cfg in config.services.items():
        manager = registry.service_manager(cfg.manager_type, name, cfg.manager_options, str(config.path))
        sources = build_sources(cfg, manager)
        services[name] = ServiceRuntime(
            cfg=cfg, manager=manager, sources=sources, heal_ctx=heal_context(cfg, config.sandbox)
        )
    return services


API_RUNNER_NAMES = frozenset({"api", "messages_api"})


def build_runner(
    config: HealbotConfig, *, extra_env: Mapping[str, str] | None = None
) -> ClaudeCliRunner | MessagesApiRunner:
    """`claude.runner = "cli"` (the default, the operator's subscription) or "api" (alias "messages_api":
    the anthropic SDK, billed per token; the SDK is imported only then)."""
    if config.claude.runner in API_RUNNER_NAMES:
        environ = {**os.environ, **(extra_env or {})}
        return MessagesApiRunner(config.claude, environ=environ)
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
        self.clock = clock or SystemClock()
        self.pipeline = Pipeline(
            config,
            self.store,
            self.runner,
            channel,
            build_services(config),
            registry.all_healers(),
            clock=self.clock,
        )
        self._scheduler: AsyncIOScheduler | None = None
        self._watcher: LogWatcher | None = None
        self._stopped = asyncio.Event()
        self.heartbeat = Heartbeat(heartbeat_path(config.state_dir))
        self._reload_lock = asyncio.Lock()
        self._background: set[asyncio.Task[object]] = set()
        self.observability = Observability(self)  # /metrics and the alert webhook, when enabled

    async def start(self) -> None:
        await self._settle_claude_children()
        self._prune_clusters()
        await self.channel.start(self.pipeline.decide)
        for note in await self.pipeline.recover():
            log.warning("recovered: %s", note)
        await self.poll()  # first run: cursors start at the end of each file
        interval = self._poll_interval()
        scheduler = AsyncIOScheduler()
        scheduler.add_job(
            self.poll,
            "interval",
            seconds=interval,
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
        if self.config.heartbeat_url:
            self._add_heartbeat_job(scheduler)
        await self.pipeline.backup_due()
        scheduler.add_job(
            self.pipeline.backup_due,
            "interval",
            seconds=BACKUP_CHECK_S,
            max_instances=1,
            coalesce=True,
            id="backup",
        )
        scheduler.start()
        self._scheduler = scheduler
        await self.observability.start()
        deadlines = asyncio.get_running_loop().create_task(self.pipeline.deadlines.run(), name="deadlines")
        self._background.add(deadlines)
        deadlines.add_done_callback(self._background.discard)

    async def _settle_claude_children(self) -> None:
        """Before recovery re-runs an interrupted diagnosis: kill the claude processes a killed daemon left
        (bot/runner/children.py), then record every new one."""
        try:
            await asyncio.to_thread(children.reap_left_over, self.store, at=self.clock.now())
        except StoreError as exc:
            log.warning("claude processes left by the previous run were not checked: %s", exc)
        if isinstance(self.runner, ClaudeCliRunner):
            self.runner.track_children(children.ChildRegistry(self.store))

    def _prune_clusters(self) -> None:
        """Forget the template clusters of removed services and those not matched for a month."""
        try:
            pruned = self.store.prune_clusters(self.config.services, now=self.clock.now())
        except StoreError as exc:
            log.warning("old template clusters were not pruned: %s", exc)
            return
        if pruned:
            log.info("pruned %d old template clusters", pruned)

    async def poll(self) -> None:
        """One scan of every source; the heartbeat notes which sources were read."""
        await self.pipeline.poll_once()
        self.heartbeat.scanned(source_states(self.pipeline.services), self.clock.now())
        await self.observability.polled()
        self._rewatch_if_changed()

    def _poll_interval(self) -> float:
        # inotify wakes the poll at once; the interval poll stays as configured (the pipeline's holds and
        # graces are re-judged on each poll, so it must not get rarer when the files are watched)
        self._watch_logs()
        return self.config.poll_interval_s

    def _add_heartbeat_job(self, scheduler: AsyncIOScheduler) -> None:
        scheduler.add_job(
            self.ping_heartbeat,
            "interval",
            seconds=self.config.heartbeat_interval_s,
            max_instances=1,
            coalesce=True,
            id="heartbeat",
        )

    async def ping_heartbeat(self) -> bool:
        """Ping the dead-man's switch if a poll completed since the last ping. True when pinged."""
        url = self.config.heartbeat_url
        if url is None:
            return False
        if not self.heartbeat.take_ping_due():
            log.warning("heartbeat not sent: no scan completed since the last one")
            return False
        problem = await asyncio.to_thread(ping, url, timeout_s=min(10.0, self.config.heartbeat_interval_s))
        if problem is not None:
            log.warning("heartbeat ping failed: %s", problem)
            return False
        log.debug("heartbeat sent to %s", ping_target(url))
        return True

    def _log_files(self) -> list[Path]:
        """The files behind every source, the ones a manager named after start-up included."""
        services = self.pipeline.services.values()
        return file_paths(s for runtime in services for s in expand_sources(runtime.sources))

    def _watch_logs(self) -> None:
        """inotify wakes the poll when a log file changes. The watcher is kept even when it cannot watch
        yet (no files, no directory): `_rewatch_if_changed` gives it the files found later."""
        files = self._log_files()
        if self._watcher is None:
            self._watcher = LogWatcher(files, self.poll)
            problem = self._watcher.start(asyncio.get_running_loop())
        else:
            problem = self._watcher.rewatch(files)
        if problem is not None and files:
            log.info("log files are polled every %g s: %s", self.config.poll_interval_s, problem)

    def _rewatch_if_changed(self) -> None:
        """After a poll or a reload: watch again when the set of files changed (a manager named new ones or
        dropped some) or a directory that was missing at the last watch exists now. Synchronous: `rewatch`
        cancels nothing, so the poll the watcher itself woke may call this."""
        watcher = self._watcher
        if watcher is None:
            return  # not watching yet (start-up's first poll) or stopped
        files = self._log_files()
        appeared = [d for d in watcher.missing if d.is_dir()]
        if set(files) == set(watcher.files) and not appeared:
            return
        log.info(
            "watching %d log file(s) anew%s",
            len(files),
            f" ({', '.join(map(str, appeared))} now exists)" if appeared else "",
        )
        self._watch_logs()

    async def reload(self) -> bool:
        """Re-read the config file (SIGHUP). Invalid → keep the running config and say why. Valid → apply
        what can change safely (see bot/reload.py) and report what waits for a restart."""
        async with self._reload_lock:
            try:
                loaded = await asyncio.to_thread(load_config, self.config.path)
                plan = plan_reload(self.config, loaded)
                fresh = await asyncio.to_thread(build_services, plan.config)
            except HealbotError as exc:
                message = f"config reload failed, still running the previous config: {exc}"
                log.error("%s", message)
                await self.channel.notify(self.pipeline.scrub(message))
                return False
            services: dict[str, ServiceRuntime] = {}
            for name, runtime in fresh.items():
                old = self.pipeline.services.get(name)
                if old is not None and old.cfg == runtime.cfg:
                    services[name] = old  # unchanged: keeps its assemblers and error state
                else:
                    if old is not None:
                        runtime.repo_lock = old.repo_lock  # an apply in flight keeps its repo exclusive
                    services[name] = runtime
            self.config = plan.config
            self.pipeline.config = plan.config
            self.pipeline.services = services
            await self._restart_jobs()
            log.warning("%s", plan.summary())
            await self.channel.notify(plan.summary())
            return True

    async def _restart_jobs(self) -> None:
        self._rewatch_if_changed()
        scheduler = self._scheduler
        if scheduler is None:
            return
        scheduler.reschedule_job("poll", trigger="interval", seconds=self.config.poll_interval_s)
        if scheduler.get_job("heartbeat") is not None:
            scheduler.remove_job("heartbeat")
        if self.config.heartbeat_url:
            self._add_heartbeat_job(scheduler)

    def _spawn_reload(self) -> None:
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(self.reload(), name="reload")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def stop(self) -> None:
        await self.observability.stop()
        await cancel_and_wait(self._background, log, "daemon task")
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        watcher, self._watcher = self._watcher, None  # first: a poll ending meanwhile must not rewatch
        if watcher is not None:
            await watcher.stop()
        await self.pipeline.cancel_all()
        if not self.pipeline.grouper.save_pending():  # clusters held back during churn, last-matched times
            log.warning("template clusters not saved at stop: the store refused; they are learned again")
        await self.channel.stop()
        self._stopped.set()

    async def run_forever(self, stop: asyncio.Event | None = None) -> None:
        """Run until SIGTERM/SIGINT (or `stop` is set: a caller that installed its handlers earlier)."""
        loop = asyncio.get_running_loop()
        if stop is not None:
            self._stopped = stop
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopped.set)
        loop.add_signal_handler(signal.SIGHUP, self._spawn_reload)
        sd_notify.notify("READY=1")  # Type=notify: from now on a `systemctl reload` is a reload
        await self.start()
        sources = sum(1 for r in self.pipeline.services.values() for _ in expand_sources(r.sources))
        log.info(
            "healbot running: %d service(s), %d log source(s), approvals via %s, state in %s",
            len(self.config.services),
            sources,
            self.config.approval.channel,
            self.config.db_path,
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
