"""supervisord's stdout_logfile / stderr_logfile, found over XML-RPC from a real supervisord, read as file
sources: an error the program logs becomes one traceback record; a supervisord that is down is a failing
source that asks again (tests/test_sources_managed.py), and doctor's probe names the problem."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.config import HealthConfig, ServiceConfig
from bot.grouping import Grouper
from bot.models import LogLine
from bot.records import RecordAssembler
from bot.sources import build_sources, probe_sources
from bot.sources.file import FileSource
from healers.services.supervisord import SupervisordManager
from tests.fakes.supervisor_env import Program, SupervisorEnv, tiny_service_argv
from tests.helpers import free_port, wait_until


@pytest.fixture(scope="module")
def supervisor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SupervisorEnv]:
    env = SupervisorEnv.start(
        tmp_path_factory.mktemp("sv-src"), [Program("web", tiny_service_argv(), {"PORT": str(free_port())})]
    )
    try:
        env.wait_state("web", "RUNNING")
        yield env
    finally:
        env.stop()


def config(tmp_path: Path, socket: str, logs: tuple[Path, ...] = ()) -> ServiceConfig:
    return ServiceConfig("web", tmp_path, logs, "supervisord", {"socket": socket}, HealthConfig())


@pytest.mark.supervisord
def test_the_stderr_logfile_yields_the_traceback_record(supervisor: SupervisorEnv, tmp_path: Path) -> None:
    manager = SupervisordManager("web", socket_path=supervisor.socket_path, timeout_s=10)
    sources = build_sources(config(tmp_path, supervisor.socket_path), manager)
    assert [s.source_id for s in sources] == [
        f"file:{supervisor.log_file('web', 'out')}",
        f"file:{supervisor.log_file('web', 'err')}",
        "supervisord-log-files:web",
    ]
    err = sources[1]
    assert isinstance(err, FileSource)
    cursor = err.read(None).cursor
    port = next(p for p in supervisor.programs if p.name == "web").environment["PORT"]
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/error", timeout=5)

    lines: list[LogLine] = []

    def traceback_arrived() -> bool:
        nonlocal cursor
        batch = err.read(cursor)
        lines.extend(batch.lines)
        cursor = batch.cursor
        return any(line.text == "KeyError: 'missing_key'" for line in lines)

    wait_until(traceback_arrived, what="the traceback in the stderr logfile")
    assembler = RecordAssembler("web", err.source_id)
    records = [r for r in assembler.feed(lines, 1.0) + assembler.flush() if "KeyError" in r.text]
    assert len(records) == 1
    assert records[0].text.split("\n")[0].endswith("request /error failed")
    fp = Grouper().fingerprint(records[0])
    assert fp.is_error and fp.exception_type == "KeyError"
    assert all(row.ok for row in probe_sources("web", sources))


def test_a_supervisord_that_is_down_is_a_failing_source_beside_the_configured_files(tmp_path: Path) -> None:
    app = tmp_path / "app.log"
    app.write_text("")
    missing = tmp_path / "gone.sock"
    manager = SupervisordManager("web", socket_path=str(missing), timeout_s=2)

    sources = build_sources(config(tmp_path, str(missing), (app, tmp_path / "missing.log")), manager)
    rows = probe_sources("web", sources)

    assert [s.source_id for s in sources] == [
        f"file:{app}",
        f"file:{tmp_path / 'missing.log'}",
        "supervisord-log-files:web",
    ]
    assert [row.ok for row in rows] == [True, False, False]
    assert "file not found" in (rows[1].problem or "")
    assert f"supervisord socket {missing} not found: is supervisord running?" in (rows[2].problem or "")
