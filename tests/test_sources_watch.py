"""inotify wake-up of the poll (bot/sources/watch.py) and its wiring in the daemon: an appended error
becomes an incident long before the interval poll would run; without a watch, polling carries on."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from bot.config import load_config
from bot.console import ConsoleChannel
from bot.daemon import Daemon
from bot.sources.file import FileSource
from bot.sources.watch import Inotify, LogWatcher, PollWaker, file_paths
from tests.fakes.world import scratch_service
from tests.helpers import until, wait_until


def test_inotify_reports_only_events_naming_a_watched_file_or_its_rotation(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("")
    inotify = Inotify([log])
    try:
        assert inotify.watching == 1 and inotify.changed() is False
        (tmp_path / "other.log").write_text("noise\n")
        (tmp_path / "app.logger").write_text("not a rotation of app.log\n")
        assert inotify.changed() is False
        with log.open("a") as out:
            out.write("ERROR boom\n")
        wait_until(inotify.changed, 5, what="the append to app.log")
        log.rename(tmp_path / "app.log.1")
        wait_until(inotify.changed, 5, what="the rotation")
    finally:
        inotify.close()


def test_a_missing_directory_is_not_watched_and_the_rest_is(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    inotify = Inotify([log, tmp_path / "missing" / "x.log"])
    try:
        assert inotify.watching == 1
        assert inotify.unwatched and "missing" in inotify.unwatched[0]
    finally:
        inotify.close()


async def test_watcher_without_files_or_watchable_directories_says_why(tmp_path: Path) -> None:
    async def poll() -> None: ...

    loop = asyncio.get_running_loop()
    assert LogWatcher([], poll).start(loop) == "no log files to watch"
    problem = LogWatcher([tmp_path / "nope" / "x.log"], poll).start(loop)
    assert problem is not None and "polling only" in problem and "nope" in problem


async def test_poll_waker_coalesces_wakes_during_a_run_into_one_more_run_then_settles() -> None:
    release = asyncio.Event()
    started: list[int] = []

    async def poll() -> None:
        started.append(1)
        await release.wait()

    waker = PollWaker(poll, min_gap_s=0.0, settle_s=0.01)
    waker.wake()
    await until(lambda: started, what="the first run", interval=0.005, timeout=10.0)
    for _ in range(10):
        waker.wake()
    release.set()
    # the first run, one more for the ten wakes, one settle run that flushes the last record
    await until(
        lambda: waker._task is not None and waker._task.done(),
        what="the runs to end",
        interval=0.005,
        timeout=10.0,
    )
    assert waker.runs == len(started) == 3
    await waker.cancel()


async def test_a_wake_during_the_settle_pause_gets_its_own_settle_poll() -> None:
    """The line read by the poll after that wake is only flushed by one more poll."""
    polls: list[float] = []

    async def poll() -> None:
        polls.append(asyncio.get_running_loop().time())

    waker = PollWaker(poll, min_gap_s=0.0, settle_s=0.05)
    waker.wake()
    await until(lambda: len(polls) == 1, what="the first poll", interval=0.005, timeout=10.0)
    waker.wake()  # during the settle pause
    await until(
        lambda: waker._task is not None and waker._task.done(),
        what="the runs to end",
        interval=0.005,
        timeout=10.0,
    )
    assert len(polls) == 3  # the settle poll that reads the new line, then the one that flushes it
    assert polls[2] - polls[1] >= 0.05


async def test_a_failing_poll_is_logged_and_the_next_wake_runs_again() -> None:
    calls: list[int] = []

    async def poll() -> None:
        calls.append(1)
        raise RuntimeError("store locked")

    waker = PollWaker(poll)
    waker.wake()
    await until(lambda: len(calls) == 1, what="the failing run", interval=0.005, timeout=10.0)
    await until(
        lambda: waker._task is not None and waker._task.done(),
        what="the run to end",
        interval=0.005,
        timeout=10.0,
    )
    waker.wake()
    await until(lambda: len(calls) == 2, what="a second run", interval=0.005, timeout=10.0)
    await waker.cancel()


def test_file_paths_takes_file_like_sources_once(tmp_path: Path) -> None:
    a = FileSource("svc", tmp_path / "a.log")
    assert file_paths([a, FileSource("svc", tmp_path / "a.log"), object()]) == [tmp_path / "a.log"]


async def test_the_daemon_turns_an_append_into_an_incident_without_waiting_for_the_interval(
    tmp_path: Path,
) -> None:
    service = scratch_service(tmp_path, files={"app.py": "x = 1\n"}, log_text="started\n")
    log = service.log
    config_path = service.write_config(healbot={"poll_interval_s": 3600})
    daemon = Daemon(load_config(config_path), ConsoleChannel(out=io.StringIO(), interactive=False))
    daemon.pipeline.auto_diagnose = False
    await daemon.start()
    try:
        assert daemon._watcher is not None
        with log.open("a") as out:
            out.write("2026-11-26 06:00:00,000 ERROR svc[1]: payment gateway refused the card\n")
        await until(daemon.store.incidents, what="the incident row", timeout=5, interval=0.005)
        [incident] = daemon.store.incidents()
        assert "payment gateway" in incident.samples[0]
    finally:
        await daemon.stop()
        daemon.store.close()
    assert daemon._watcher is None
