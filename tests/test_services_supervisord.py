"""SupervisordManager against a real supervisord (scratch config, unix socket, tiny_service programs)."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.errors import ConfigError, RestartFailed, ServiceError
from bot.models import ServiceState
from healers.services.supervisord import SupervisordManager
from tests.fakes.supervisor_env import Program, SupervisorEnv, tiny_service_argv
from tests.helpers import free_port, wait_until


@pytest.fixture(scope="module")
def supervisor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SupervisorEnv]:
    workdir = tmp_path_factory.mktemp("supervisor")
    programs = [
        Program("web", tiny_service_argv(), {"PORT": str(free_port())}),
        Program(
            "flaky", tiny_service_argv(), {"PORT": str(free_port()), "CRASH_FLAG": str(workdir / "crash")}
        ),
    ]
    env = SupervisorEnv.start(workdir, programs)
    try:
        env.wait_state("web", "RUNNING")
        env.wait_state("flaky", "RUNNING")
        yield env
    finally:
        env.stop()


def port_of(env: SupervisorEnv, program: str) -> int:
    return int(next(p for p in env.programs if p.name == program).environment["PORT"])


def health_pid(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
        return int(json.load(response)["pid"])


def manager(env: SupervisorEnv, program: str) -> SupervisordManager:
    return SupervisordManager(program, socket_path=env.socket_path, timeout_s=10)


@pytest.mark.supervisord
def test_status_reports_running_pid_and_log_paths(supervisor: SupervisorEnv) -> None:
    web = manager(supervisor, "web")

    status = web.status()

    assert status.state is ServiceState.RUNNING
    assert status.pid == supervisor.info("web")["pid"] == health_pid(port_of(supervisor, "web"))
    assert tuple(web.log_paths()) == (
        str(supervisor.log_file("web", "out")),
        str(supervisor.log_file("web", "err")),
    )
    assert web.check() is None


@pytest.mark.supervisord
def test_restart_returns_a_new_process_that_stayed_up(supervisor: SupervisorEnv) -> None:
    web = manager(supervisor, "web")
    old_pid = web.status().pid

    status = web.restart(settle_s=1)

    assert status.state is ServiceState.RUNNING
    assert status.pid not in (None, old_pid)
    assert health_pid(port_of(supervisor, "web")) == status.pid
    assert supervisor.info("web")["statename"] == "RUNNING"


@pytest.mark.supervisord
def test_crash_loop_raises_restart_failed_and_status_shows_fatal_with_reason(
    supervisor: SupervisorEnv,
) -> None:
    flaky = manager(supervisor, "flaky")
    crash_flag = supervisor.workdir / "crash"
    crash_flag.touch()
    try:
        with pytest.raises(RestartFailed) as failure:
            flaky.restart(settle_s=1)
        assert str(failure.value).startswith("supervisord: flaky ")
        assert "Exited too quickly" in str(failure.value)

        fatal = wait_until(lambda: (s := flaky.status()).state is ServiceState.FATAL and s, what="FATAL")
        assert fatal.detail.startswith("FATAL: Exited too quickly")
        assert "crashing on purpose" in supervisor.log_file("flaky", "err").read_text()
    finally:
        crash_flag.unlink()

    recovered = flaky.restart(settle_s=0.5)  # from FATAL: stopProcess says NOT_RUNNING, start works

    assert recovered.state is ServiceState.RUNNING
    assert health_pid(port_of(supervisor, "flaky")) == recovered.pid


@pytest.mark.supervisord
def test_unknown_program_is_named_with_the_known_ones(supervisor: SupervisorEnv) -> None:
    ghost = manager(supervisor, "ghost")

    problem = ghost.check()

    assert problem is not None
    assert "no program 'ghost'" in problem
    assert "known: flaky, web" in problem
    with pytest.raises(ServiceError, match="no program 'ghost'"):
        ghost.status()
    with pytest.raises(RestartFailed, match="cannot restart"):
        ghost.restart(settle_s=0.1)


def test_missing_socket_is_reported_with_how_to_start_supervisord(tmp_path: Path) -> None:
    missing = SupervisordManager("web", socket_path=str(tmp_path / "nope.sock"))

    problem = missing.check()

    assert problem is not None
    assert f"supervisord socket {tmp_path / 'nope.sock'} not found" in problem
    assert "supervisord -c" in problem
    with pytest.raises(ServiceError, match="not found"):
        missing.status()
    with pytest.raises(RestartFailed, match="not found"):
        missing.restart(settle_s=0.1)


def test_stale_socket_file_is_reported_as_not_running(tmp_path: Path) -> None:
    import tempfile

    socket_dir = Path(tempfile.mkdtemp(prefix="hb-stale-"))
    path = socket_dir / "s.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays; nobody listens
    try:
        problem = SupervisordManager("web", socket_path=str(path)).check()
    finally:
        path.unlink()
        socket_dir.rmdir()

    assert problem is not None
    assert "refused the connection" in problem


def test_from_options_reads_socket_url_and_defaults(tmp_path: Path) -> None:
    config = str(tmp_path / "healbot.toml")

    built = SupervisordManager.from_options("web", {"socket": "unix:///run/supervisor.sock"}, config)
    relative = SupervisordManager.from_options("web", {"socket": "run/s.sock", "program": "grp:web"}, config)

    assert (built.socket_path, built.program, built.service) == ("/run/supervisor.sock", "web", "web")
    assert relative.socket_path == str(tmp_path / "run/s.sock")
    assert relative.program == "grp:web"


@pytest.mark.parametrize(
    ("options", "key", "message"),
    [
        ({}, "socket", "is required"),
        ({"socket": 5}, "socket", "must be a string"),
        ({"socket": "http://127.0.0.1:9001"}, "socket", "unix socket path"),
        ({"socket": "unix://"}, "socket", "must name the socket file"),
        ({"socket": "/s.sock", "program": ["web"]}, "program", "must be a string"),
        ({"socket": "/s.sock", "timeout_s": 0}, "timeout_s", "greater than 0"),
        ({"socket": "/s.sock", "sock": "/x"}, "sock", "unknown option"),
    ],
)
def test_from_options_rejects_bad_tables_naming_the_key(
    tmp_path: Path, options: dict[str, object], key: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        SupervisordManager.from_options("web", options, str(tmp_path / "healbot.toml"))

    assert error.value.key == f"services.web.manager.{key}"
    assert error.value.path == str(tmp_path / "healbot.toml")
