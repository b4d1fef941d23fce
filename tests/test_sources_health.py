"""build_sources for each manager type, and the source-health rows for doctor and /status."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bot.config import HealthConfig, ServiceConfig
from bot.errors import ServiceError
from bot.models import ServiceState, ServiceStatus
from bot.sources import build_sources, probe_sources, source_health


class Manager:
    service = "web"

    def __init__(self, paths: Sequence[str] = (), fail: bool = False) -> None:
        self.paths = tuple(paths)
        self.fail = fail

    def status(self) -> ServiceStatus:
        return ServiceStatus(ServiceState.RUNNING)

    def restart(self, settle_s: float) -> ServiceStatus:
        return self.status()

    def log_paths(self) -> Sequence[str]:
        if self.fail:
            raise ServiceError("pm2 daemon is not running")
        return self.paths

    def check(self) -> str | None:
        return None


def config(
    tmp_path: Path, manager_type: str, options: dict[str, object], logs: tuple[Path, ...] = ()
) -> ServiceConfig:
    return ServiceConfig("web", tmp_path, logs, manager_type, options, HealthConfig())


def test_each_manager_type_gets_its_sources(tmp_path: Path) -> None:
    app = tmp_path / "app.log"
    ids = lambda cfg, m: [s.source_id for s in build_sources(cfg, m)]  # noqa: E731
    pm2 = ids(config(tmp_path, "pm2", {}, (app,)), Manager([str(tmp_path / "o.log"), str(app)]))
    assert pm2 == [f"file:{app}", f"file:{tmp_path / 'o.log'}", "pm2-log-files:web"]
    assert ids(config(tmp_path, "systemd", {"unit": "web.service", "user": True}), Manager()) == [
        "journald:user:web.service"
    ]
    assert ids(
        config(tmp_path, "docker", {"container": "shop"}), Manager(["/var/lib/docker/x-json.log"])
    ) == ["docker:shop"]


def test_a_manager_that_cannot_answer_leaves_the_configured_files_and_a_source_that_asks_again(
    tmp_path: Path,
) -> None:
    app = tmp_path / "app.log"
    sources = build_sources(config(tmp_path, "pm2", {}, (app,)), Manager(fail=True))
    assert [s.source_id for s in sources] == [f"file:{app}", "pm2-log-files:web"]
    [row] = [r for r in probe_sources("web", sources) if r.source_id == "pm2-log-files:web"]
    assert not row.ok and "pm2 daemon is not running" in (row.problem or "")


def test_health_rows_name_the_failing_source_and_its_reason(tmp_path: Path) -> None:
    good = tmp_path / "good.log"
    good.write_text("x\n")
    cfg = config(tmp_path, "command", {}, (good, tmp_path / "missing.log"))
    sources = build_sources(cfg, Manager())
    rows = probe_sources("web", sources)
    assert [(r.ok, r.problem and "file not found" in r.problem) for r in rows] == [
        (True, None),
        (False, True),
    ]
    assert "retried each poll" in rows[1].describe()
    live = source_health("web", sources, {f"file:{tmp_path / 'missing.log'}": "gone"})
    assert [r.ok for r in live] == [True, False] and live[1].problem == "gone"


def test_pm2_manager_files_are_read_by_the_pm2_source_and_configured_files_as_plain_files(
    tmp_path: Path,
) -> None:
    from bot.sources.file import FileSource
    from bot.sources.managed import ManagerLogSources
    from bot.sources.pm2 import Pm2LogSource

    app, out = tmp_path / "app.log", tmp_path / "o.log"
    pm2 = build_sources(config(tmp_path, "pm2", {}, (app,)), Manager([str(out), str(app)]))
    supervised = build_sources(config(tmp_path, "supervisord", {}, ()), Manager([str(out)]))

    assert [type(s) for s in pm2] == [FileSource, Pm2LogSource, ManagerLogSources]
    assert [type(s) for s in supervised] == [FileSource, ManagerLogSources]
