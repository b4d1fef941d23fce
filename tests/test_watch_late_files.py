"""Log files a manager names after start-up are watched by inotify too: the daemon re-watches after a poll
that found new files (and after a reload), once the set of files changed, never on a poll that found
nothing new; a late file's directory that appears later is watched after the next poll. The daemon runs
in-process with a one-hour poll interval, so an incident that shows up in seconds came through inotify."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.config import load_config
from bot.console import ConsoleChannel
from bot.daemon import Daemon, heal_context
from bot.interfaces import LogSource
from bot.models import ServiceState, ServiceStatus
from bot.pipeline import ServiceRuntime
from bot.sources.file import FileSource
from bot.sources.managed import REFRESH_S, ManagerLogSources
from bot.sources.watch import LogWatcher
from tests.fakes.world import ManualClock, scratch_service
from tests.helpers import until

ERROR_LINE = "2026-11-26 06:00:00,000 ERROR svc[1]: payment gateway refused the card\n"


class LateNamingManager:
    """Names no log file on its first ask, then `paths` on every later one."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.service = "svc"
        self.paths = tuple(paths)
        self.asks = 0

    def status(self) -> ServiceStatus:
        return ServiceStatus(ServiceState.RUNNING)

    def restart(self, settle_s: float) -> ServiceStatus:
        return self.status()

    def log_paths(self) -> Sequence[str]:
        self.asks += 1
        return () if self.asks == 1 else tuple(str(p) for p in self.paths)

    def check(self) -> str | None:
        return None


@dataclass
class LateWorld:
    daemon: Daemon
    manager: LateNamingManager
    clock: ManualClock
    configured: Path

    @property
    def watcher(self) -> LogWatcher:
        assert self.daemon._watcher is not None
        return self.daemon._watcher

    async def manager_asked_again(self) -> None:
        """The manager's refresh is due; one poll (as the interval poll would run it) asks it."""
        self.clock.t += REFRESH_S
        await self.daemon.poll()
        assert self.manager.asks == 2

    async def idle(self) -> None:
        """Wait until no woken poll is running or due, so that the next poll can only come from inotify."""
        waker = self.watcher.waker
        await until(
            lambda: waker._task is None or waker._task.done(),
            what="the woken polls to end",
            timeout=10,
            interval=0.005,
        )

    async def incident_appears(self, timeout: float = 5) -> None:
        await until(self.daemon.store.incidents, what="the incident row", timeout=timeout, interval=0.005)
        [incident] = self.daemon.store.incidents()
        assert "payment gateway" in incident.samples[0]


async def start_late_world(tmp_path: Path, late: Path, *, configured_watched: bool) -> LateWorld:
    """A daemon (poll every hour) whose service `svc` has a stand-in manager naming `late` on its second
    ask; with `configured_watched`, the configured log is a source too (the watcher watches it from the
    start), else the manager's files are the only ones (nothing to watch at start)."""
    service = scratch_service(tmp_path, files={"app.py": "x = 1\n"}, log_text="started\n")
    config = load_config(service.write_config(healbot={"poll_interval_s": 3600}))
    daemon = Daemon(config, ConsoleChannel(out=io.StringIO(), interactive=False))
    daemon.pipeline.auto_diagnose = False
    clock = ManualClock()
    manager = LateNamingManager([late])
    cfg = config.services["svc"]
    managed = ManagerLogSources(
        "svc",
        manager,
        manager_type="supervisord",
        covered=[service.log],
        open_file=FileSource,
        clock=clock,
        named=tuple(Path(p) for p in manager.log_paths()),  # the ask build_sources makes at start-up
    )
    sources: list[LogSource] = [FileSource("svc", service.log)] if configured_watched else []
    sources.append(managed)
    daemon.pipeline.services = {"svc": ServiceRuntime(cfg, manager, sources, heal_context(cfg))}
    await daemon.start()
    return LateWorld(daemon, manager, clock, service.log)


@pytest.fixture
async def worlds() -> AsyncIterator[list[LateWorld]]:
    started: list[LateWorld] = []
    yield started
    for world in started:
        await world.daemon.stop()
        world.daemon.store.close()


@pytest.mark.parametrize("configured_watched", [True, False], ids=["beside-a-watched-file", "only-file"])
async def test_a_file_the_manager_names_after_start_up_is_watched(
    tmp_path: Path, worlds: list[LateWorld], configured_watched: bool
) -> None:
    late = tmp_path / "supervisor" / "svc-stdout.log"
    late.parent.mkdir()
    late.write_text("old history, never read\n")
    world = await start_late_world(tmp_path, late, configured_watched=configured_watched)
    worlds.append(world)
    assert late not in world.watcher.files

    await world.manager_asked_again()
    assert late in world.watcher.files and world.watcher.watching
    await world.idle()
    with late.open("a") as out:
        out.write(ERROR_LINE)

    await world.incident_appears()


async def test_polls_that_find_no_new_file_do_not_rewatch(tmp_path: Path, worlds: list[LateWorld]) -> None:
    late = tmp_path / "supervisor" / "svc-stdout.log"
    late.parent.mkdir()
    world = await start_late_world(tmp_path, late, configured_watched=True)
    worlds.append(world)
    at_start = world.watcher._inotify
    assert at_start is not None
    await world.daemon.poll()
    assert world.watcher._inotify is at_start

    await world.manager_asked_again()
    found = world.watcher._inotify
    assert found is not None and found is not at_start
    await world.idle()
    for _ in range(3):
        await world.daemon.poll()
    world.clock.t += REFRESH_S  # the manager is asked again and names the same file
    await world.daemon.poll()
    assert world.manager.asks == 3
    assert world.watcher._inotify is found


async def test_a_late_file_whose_directory_appears_later_is_watched_after_the_next_poll(
    tmp_path: Path, worlds: list[LateWorld]
) -> None:
    late = tmp_path / "pm2" / "logs" / "svc-out.log"
    world = await start_late_world(tmp_path, late, configured_watched=True)
    worlds.append(world)
    await world.manager_asked_again()
    missing = world.watcher.missing
    assert late in world.watcher.files and missing == (late.parent,)

    late.parent.mkdir(parents=True)
    late.write_text("started\n")
    await world.daemon.poll()  # the interval poll that follows: it reads the file and watches its directory
    assert not world.watcher.missing and world.watcher.complete
    await world.idle()
    with late.open("a") as out:
        out.write(ERROR_LINE)

    await world.incident_appears()


async def test_a_reload_keeps_watching_the_files_found_late(tmp_path: Path, worlds: list[LateWorld]) -> None:
    """The service's config is unchanged, so the reload keeps its runtime and the files its manager found:
    they must stay watched (the watcher used to be rebuilt from the start-up sources alone)."""
    late = tmp_path / "supervisor" / "svc-stdout.log"
    late.parent.mkdir()
    world = await start_late_world(tmp_path, late, configured_watched=True)
    worlds.append(world)
    await world.manager_asked_again()
    await world.idle()

    assert await world.daemon.reload()
    assert late in world.watcher.files and world.watcher.watching
    await world.idle()
    with late.open("a") as out:
        out.write(ERROR_LINE)

    await world.incident_appears()


async def test_rewatch_from_inside_the_woken_poll_cancels_nothing(tmp_path: Path) -> None:
    """The watcher's callback is the poll itself: a poll that re-watches must run to its end."""
    first, second = tmp_path / "a" / "first.log", tmp_path / "b" / "second.log"
    for path in (first, second):
        path.parent.mkdir()
        path.write_text("")
    finished: list[int] = []
    release = asyncio.Event()

    async def poll() -> None:
        if not finished:
            assert watcher.rewatch([first, second]) is None
            await release.wait()  # still inside the poll that re-watched
        finished.append(1)

    watcher = LogWatcher([first], poll)
    assert watcher.start(asyncio.get_running_loop()) is None
    try:
        watcher.waker.wake()
        await until(lambda: watcher.files == (first, second), what="the rewatch", timeout=10, interval=0.005)
        release.set()
        await until(lambda: len(finished) >= 2, what="the poll to end, then the woken one", timeout=10)
        task = watcher.waker._task
        await until(lambda: task is None or task.done(), what="the woken polls to end", timeout=10)
        with second.open("a") as out:
            out.write("line\n")
        runs = watcher.waker.runs
        await until(lambda: watcher.waker.runs > runs, what="a poll woken by the new file", timeout=10)
    finally:
        await watcher.stop()
