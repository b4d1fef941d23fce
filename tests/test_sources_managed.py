"""The log files of a PM2 / supervisord service, asked for again when the manager could not answer at
start-up: a failing source with the manager's reason until it answers, then its files are read from where
healbot first saw them; later answers pick up new paths. Real supervisord and PM2 through the real pipeline,
and a scripted manager with a manual clock for the backoff."""

from __future__ import annotations

import asyncio
import contextlib
import io
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from bot import registry
from bot.config import HealbotConfig, HealthConfig, ServiceConfig, load_config
from bot.console import ConsoleChannel
from bot.daemon import heal_context
from bot.errors import ServiceError, SourceError
from bot.interfaces import LogSource
from bot.models import LogLine, RunRequest, RunResult, ServiceState, ServiceStatus
from bot.pipeline import Pipeline, ServiceRuntime
from bot.sources import build_sources, expand_sources, probe_sources, source_health
from bot.sources.file import FileSource
from bot.sources.managed import LateFileSource, ManagerLogSources
from bot.sources.pm2 import Pm2LogSource
from bot.store import Store
from tests.conftest import pm2_binary
from tests.fakes.pm2_env import Pm2Env
from tests.fakes.supervisor_env import Program, SupervisorEnv, tiny_service_argv
from tests.fakes.world import ManualClock, ShiftedClock
from tests.helpers import free_port, until

# --- a scripted manager -------------------------------------------------------------------------------


class ScriptedManager:
    """Answers `log_paths` with `paths`, or fails with `problem`; notes when it was asked."""

    def __init__(self, clock: ManualClock, paths: Sequence[Path] = (), problem: str | None = None) -> None:
        self.service = "web"
        self.clock = clock
        self.paths = tuple(paths)
        self.problem = problem
        self.asked_at: list[float] = []

    def status(self) -> ServiceStatus:
        return ServiceStatus(ServiceState.RUNNING)

    def restart(self, settle_s: float) -> ServiceStatus:
        return self.status()

    def log_paths(self) -> Sequence[str]:
        self.asked_at.append(self.clock.t)
        if self.problem is not None:
            raise ServiceError(self.problem)
        return tuple(str(p) for p in self.paths)

    def check(self) -> str | None:
        return self.problem


def service_config(
    tmp_path: Path, manager_type: str = "supervisord", logs: Sequence[Path] = ()
) -> ServiceConfig:
    return ServiceConfig("web", tmp_path, tuple(logs), manager_type, {}, HealthConfig())


def managed_of(sources: Sequence[LogSource]) -> ManagerLogSources:
    [managed] = [s for s in sources if isinstance(s, ManagerLogSources)]
    return managed


class Poller:
    """What the pipeline does with a service's sources each poll, minus grouping: cursors by source id."""

    def __init__(self, sources: Sequence[LogSource]) -> None:
        self.sources = sources
        self.cursors: dict[str, str] = {}
        self.errors: dict[str, str] = {}

    def poll(self) -> list[LogLine]:
        lines: list[LogLine] = []
        for source in expand_sources(self.sources):
            try:
                batch = source.read(self.cursors.get(source.source_id))
            except SourceError as exc:
                self.errors[source.source_id] = str(exc)
                continue
            self.errors.pop(source.source_id, None)
            self.cursors[source.source_id] = batch.cursor
            lines.extend(batch.lines)
        return lines


# --- scripted manager ----------------------------------------------------------------------------------


def test_a_manager_that_cannot_answer_is_a_failing_source_with_its_reason(tmp_path: Path) -> None:
    app = tmp_path / "app.log"
    app.write_text("")
    clock = ManualClock()
    manager = ScriptedManager(clock, problem="the PM2 daemon for PM2_HOME=/x is not running")

    sources = build_sources(service_config(tmp_path, "pm2", (app,)), manager, clock=clock)
    rows = probe_sources("web", sources)

    assert [s.source_id for s in sources] == [f"file:{app}", "pm2-log-files:web"]
    assert [row.ok for row in rows] == [True, False]
    assert rows[1].problem == (
        "pm2 cannot name the log files of web yet: the PM2 daemon for PM2_HOME=/x is not running"
    )
    assert rows[1].describe().endswith("asked again after 1, 2, 4 … s, then once a minute")
    live = source_health("web", sources, {"pm2-log-files:web": rows[1].problem or ""})
    assert [r.ok for r in live] == [True, False]


def test_the_manager_is_asked_again_with_backoff_then_once_a_minute(tmp_path: Path) -> None:
    clock = ManualClock()
    manager = ScriptedManager(clock, problem="supervisord socket /x.sock not found")
    managed = managed_of(build_sources(service_config(tmp_path), manager, clock=clock))
    start = clock.t

    def poll_until(end: float) -> None:
        while clock.t < start + end:
            clock.t += 0.5
            if managed.nothing_new(None):
                continue  # what the pipeline does: no read, no thread hop
            with contextlib.suppress(SourceError):
                managed.read(None)

    poll_until(130)
    assert [t - start for t in manager.asked_at] == [0, 1, 3, 7, 15, 31, 63, 123]

    manager.problem = None
    poll_until(320)
    assert [t - start for t in manager.asked_at[8:]] == [183, 243, 303]
    assert managed.problem is None and managed.nothing_new(None)


def test_files_found_late_are_read_from_where_healbot_first_saw_them(tmp_path: Path) -> None:
    """One existed with old history (not read: it could open stale incidents); one did not exist yet."""
    old, new = tmp_path / "old.log", tmp_path / "new.log"
    old.write_text("ERROR written before healbot knew this file\n")
    clock = ManualClock()
    manager = ScriptedManager(clock, problem="supervisord socket /x.sock not found")
    poller = Poller(build_sources(service_config(tmp_path), manager, clock=clock))
    assert poller.poll() == [] and "supervisord-log-files:web" in poller.errors

    manager.problem, manager.paths = None, (old, new)
    clock.t += 1
    assert poller.poll() == []
    assert "supervisord-log-files:web" not in poller.errors
    assert "file not found" in poller.errors[f"file:{new}"]
    with old.open("a") as out:
        out.write("ERROR appended to the old file after it was found\n")
    new.write_text("ERROR the first line of the new file\n")

    texts = [line.text for line in poller.poll()]

    assert texts == [
        "ERROR appended to the old file after it was found",
        "ERROR the first line of the new file",
    ]
    assert poller.errors == {}


def test_a_path_the_manager_names_later_is_picked_up_and_one_it_drops_is_not_read(tmp_path: Path) -> None:
    configured, first, moved = tmp_path / "app.log", tmp_path / "web-out.log", tmp_path / "moved-out.log"
    clock = ManualClock()
    manager = ScriptedManager(clock, paths=(first, configured))
    sources = build_sources(service_config(tmp_path, "supervisord", (configured,)), manager, clock=clock)
    managed = managed_of(sources)
    assert [s.source_id for s in sources] == [f"file:{configured}", f"file:{first}", managed.source_id]
    assert managed.files() == ()  # both are read by the service's own sources already

    manager.paths = (moved, configured)
    clock.t += 59
    managed.read(None)
    assert managed.files() == ()  # not asked again before a minute is up
    clock.t += 1
    managed.read(None)
    assert [f.path for f in managed.files()] == [moved]

    manager.paths = (tmp_path / "again.log",)
    clock.t += 60
    kept = managed.files()[0]
    manager.problem = "supervisord socket /x.sock not found"
    with pytest.raises(SourceError, match="not found"):
        managed.read(None)
    assert managed.files() == (kept,)  # a manager down for a while: the files found stay read
    manager.problem = None
    clock.t += 1
    managed.read(None)
    assert [f.path for f in managed.files()] == [tmp_path / "again.log"]


def test_pm2_files_found_late_unwrap_pm2_entries_and_others_are_plain(tmp_path: Path) -> None:
    clock = ManualClock()
    for manager_type, kind in (("pm2", Pm2LogSource), ("supervisord", FileSource)):
        manager = ScriptedManager(clock, problem="down")
        managed = managed_of(build_sources(service_config(tmp_path, manager_type), manager, clock=clock))
        manager.problem, manager.paths = None, (tmp_path / "late.log",)
        clock.t += 1
        managed.read(None)
        [late] = managed.files()
        assert isinstance(late, LateFileSource) and isinstance(late.inner, kind)


def test_only_managers_that_write_files_are_asked_again(tmp_path: Path) -> None:
    clock = ManualClock()
    for manager_type in ("command", "docker", "systemd"):
        sources = build_sources(service_config(tmp_path, manager_type), ScriptedManager(clock), clock=clock)
        assert not any(isinstance(s, ManagerLogSources) for s in sources), manager_type


# --- the real managers through the real pipeline --------------------------------------------------------


class NoRunner:
    name = "none"

    async def run(self, request: RunRequest) -> RunResult:
        raise AssertionError("these tests never diagnose")


def load(tmp_path: Path, manager_table: str) -> HealbotConfig:
    path = tmp_path / "healbot.toml"
    path.write_text(
        f'[healbot]\nstate_dir = "{tmp_path}/state"\n\n[services.web]\nrepo = "{tmp_path}"\nlogs = []\n\n'
        f"[services.web.manager]\n{manager_table}\n"
    )
    return load_config(path, check_repos=False)


def pipeline_of(config: HealbotConfig, clock: ShiftedClock) -> Pipeline:
    cfg = config.services["web"]
    manager = registry.service_manager(cfg.manager_type, "web", cfg.manager_options, str(config.path))
    runtime = ServiceRuntime(cfg, manager, build_sources(cfg, manager, clock=clock), heal_context(cfg))
    pipeline = Pipeline(
        config,
        Store.open(config.db_path),
        NoRunner(),
        ConsoleChannel(out=io.StringIO(), interactive=False),
        {"web": runtime},
        {},
        clock=clock,
    )
    pipeline.auto_diagnose = False
    return pipeline


def failing(pipeline: Pipeline) -> dict[str, str]:
    runtime = pipeline.services["web"]
    rows = source_health("web", runtime.sources, runtime.source_errors)
    return {row.source_id: row.problem or "" for row in rows if not row.ok}


def hit_error(port: int | str) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/error", timeout=5).close()
    except urllib.error.HTTPError as exc:
        return exc.code == 500
    except OSError:
        return False
    return False


async def key_error_incident(pipeline: Pipeline, port: int | str) -> None:
    """Make the service log its traceback; poll as the daemon does until it is an incident."""
    await until(lambda: hit_error(port), what="the service to answer /error")
    deadline = time.monotonic() + 20
    while not any(i.exception_type == "KeyError" for i in pipeline.store.incidents()):
        assert time.monotonic() < deadline, f"no KeyError incident; failing sources: {failing(pipeline)}"
        await pipeline.poll_once()
        await asyncio.sleep(0.02)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """Unix socket paths are limited to ~108 bytes; pytest's tmp paths can be longer."""
    path = Path(tempfile.mkdtemp(prefix="hb-svm-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.supervisord
async def test_manager_down_at_start_its_log_files_are_found_later(tmp_path: Path, short_dir: Path) -> None:
    socket = short_dir / "supervisor.sock"
    config = load(tmp_path, f'type = "supervisord"\nsocket = "{socket}"\nprogram = "web"')
    clock = ShiftedClock()
    pipeline = pipeline_of(config, clock)

    await pipeline.poll_once()
    problems = failing(pipeline)
    assert list(problems) == ["supervisord-log-files:web"]
    assert (
        f"supervisord socket {socket} not found: is supervisord running?"
        in problems["supervisord-log-files:web"]
    )

    port = free_port()
    env = SupervisorEnv.start(tmp_path / "sv", [Program("web", tiny_service_argv(), {"PORT": str(port)})])
    try:
        socket.symlink_to(env.socket_path)  # supervisord now answers where healbot was told it would
        env.wait_state("web", "RUNNING")
        clock.offset += 1.0  # the first retry is due
        await pipeline.poll_once()
        assert failing(pipeline) == {}
        ids = [s.source_id for s in expand_sources(pipeline.services["web"].sources)]
        assert ids == [
            "supervisord-log-files:web",
            f"file:{env.log_file('web', 'out')}",
            f"file:{env.log_file('web', 'err')}",
        ]

        await key_error_incident(pipeline, port)
    finally:
        env.stop()
        pipeline.store.close()


@pytest.mark.pm2
async def test_pm2_down_then_without_the_app_then_its_log_files_are_read(tmp_path: Path) -> None:
    binary = pm2_binary()
    if binary is None:
        pytest.fail("pm2 missing: run `make tools`")
    env = Pm2Env(Path(tempfile.mkdtemp(prefix="hb-pm2-")), binary)
    config = load(tmp_path, f'type = "pm2"\napp = "web"\npm2_home = "{env.home}"\nbinary = "{binary}"')
    clock = ShiftedClock()
    pipeline = pipeline_of(config, clock)
    try:
        await pipeline.poll_once()
        assert "the PM2 daemon" in failing(pipeline)["pm2-log-files:web"]

        env.run("ping")  # the daemon runs; the app is not defined yet
        clock.offset += 1.0
        await pipeline.poll_once()
        assert "has no app 'web'" in failing(pipeline)["pm2-log-files:web"]

        port = free_port()
        env.start_app("web", {"PORT": str(port)})
        clock.offset += 2.0
        await pipeline.poll_once()
        assert failing(pipeline) == {}
        late = [s for s in expand_sources(pipeline.services["web"].sources) if isinstance(s, LateFileSource)]
        assert [s.path for s in late] == [env.home / "logs/web-out.log", env.home / "logs/web-error.log"]

        await key_error_incident(pipeline, port)
    finally:
        env.stop()
        pipeline.store.close()
