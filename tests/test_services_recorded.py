"""SystemdManager and DockerManager against recorded `systemctl show` / `docker inspect` outputs.

Neither systemd nor a Docker engine runs on this machine (see notes/process-managers.md), so the command
runner is injected: it answers from tests/data/recorded and records the exact argv it was given.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from bot.errors import ConfigError, RestartFailed, ServiceError
from bot.models import ServiceState
from healers.services.docker import DockerManager, parse_inspect
from healers.services.systemd import SystemdManager, parse_show

RECORDED = Path(__file__).resolve().parent / "data" / "recorded"
DOCKER_SECRET = "hunter2-recorded-secret"  # in Config.Env of every recorded docker inspect
SHOW_ARGV = [
    "systemctl", "show", "web.service", "--no-pager",
    "--property=LoadState,ActiveState,SubState,Result,MainPID,NRestarts,ExecMainCode,ExecMainStatus,StatusText,Restart,StartLimitBurst",
]  # fmt: skip
Answer = tuple[int, str, str]


def recorded(name: str) -> str:
    return (RECORDED / name).read_text()


def ok(name: str) -> Answer:
    return (0, recorded(name), "")


class ScriptedRunner:
    """Answers per verb (show/restart/inspect) from a script; the last answer of a verb repeats."""

    def __init__(self, **script: Sequence[Answer]) -> None:
        self.script = {verb: list(answers) for verb, answers in script.items()}
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> Answer:
        self.calls.append(list(argv))
        verb = next(word for word in argv if word in self.script)
        answers = self.script[verb]
        return answers.pop(0) if len(answers) > 1 else answers[0]


def systemd(runner: ScriptedRunner, **kwargs: object) -> SystemdManager:
    return SystemdManager("web", unit="web.service", runner=runner, timeout_s=0.5, **kwargs)  # type: ignore[arg-type]


def docker(runner: ScriptedRunner) -> DockerManager:
    return DockerManager("web", container="web", runner=runner, timeout_s=0.5)


# --- systemd -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recording", "state", "pid", "restarts", "detail"),
    [
        ("systemctl-show-active.txt", ServiceState.RUNNING, 48213, 0, "active (running)"),
        (
            "systemctl-show-failed.txt",
            ServiceState.FATAL,
            None,
            0,
            "failed (failed), Result=exit-code: the main process exited with a non-zero code (1)",
        ),
        (
            "systemctl-show-activating-auto-restart.txt",
            ServiceState.CRASH_LOOP,
            None,
            3,
            "activating (auto-restart), Result=exit-code: the main process exited with a non-zero code (1), "
            "restarted 3 times by systemd",
        ),
        (
            "systemctl-show-start-limit-hit.txt",
            ServiceState.FATAL,
            None,
            5,
            "failed (failed), Result=start-limit-hit: it hit its start limit (restarted too often); "
            "run `systemctl reset-failed web.service` once the cause is fixed, restarted 5 times by systemd",
        ),
        ("systemctl-show-not-found.txt", ServiceState.UNKNOWN, None, None, "unit web.service not found"),
    ],
)
def test_systemd_status_from_recorded_show(
    recording: str, state: ServiceState, pid: int | None, restarts: int | None, detail: str
) -> None:
    runner = ScriptedRunner(show=[ok(recording)])

    status = systemd(runner).status()

    assert (status.state, status.pid, status.restarts, status.detail) == (state, pid, restarts, detail)
    assert runner.calls == [SHOW_ARGV]


def test_systemd_user_units_get_the_user_flag_everywhere() -> None:
    runner = ScriptedRunner(show=[ok("systemctl-show-active.txt"), ok("systemctl-show-active-restarted.txt")],
                            restart=[(0, "", "")])  # fmt: skip

    systemd(runner, user=True, systemctl="/usr/bin/systemctl").restart(settle_s=0.2)

    assert runner.calls[0] == ["/usr/bin/systemctl", "--user", *SHOW_ARGV[1:]]
    assert runner.calls[1] == ["/usr/bin/systemctl", "--user", "restart", "web.service"]


def test_systemd_restart_waits_for_the_new_pid_to_stay_up() -> None:
    runner = ScriptedRunner(
        show=[ok("systemctl-show-active.txt"), ok("systemctl-show-active-restarted.txt")],
        restart=[(0, "", "")],
    )

    status = systemd(runner).restart(settle_s=0.3)

    assert (status.state, status.pid) == (ServiceState.RUNNING, 48377)
    assert runner.calls[:2] == [SHOW_ARGV, ["systemctl", "restart", "web.service"]]
    assert len(runner.calls) >= 4  # kept polling during the settle period
    assert all(call == SHOW_ARGV for call in runner.calls[2:])


def test_systemd_restart_that_falls_into_auto_restart_fails_with_what_was_seen() -> None:
    runner = ScriptedRunner(
        show=[
            ok("systemctl-show-active.txt"),
            ok("systemctl-show-active-restarted.txt"),
            ok("systemctl-show-activating-auto-restart.txt"),
        ],
        restart=[(0, "", "")],
    )

    with pytest.raises(RestartFailed) as failure:
        systemd(runner).restart(settle_s=5)

    assert str(failure.value).startswith(
        "systemd: web.service came up (pid 48377) but then entered activating (auto-restart), Result=exit-code"
    )


def test_systemd_restart_refused_at_the_start_limit_says_so() -> None:
    runner = ScriptedRunner(
        show=[ok("systemctl-show-start-limit-hit.txt")],
        restart=[(1, "", recorded("systemctl-restart-start-limit.stderr"))],
    )

    with pytest.raises(RestartFailed) as failure:
        systemd(runner).restart(settle_s=1)

    message = str(failure.value)
    assert message.startswith(
        "systemd: web.service: `systemctl restart` failed (exit 1): Job for web.service"
    )
    assert "attempted too often" in message
    assert "before the restart it was failed (failed), Result=start-limit-hit" in message
    assert len(runner.calls) == 2  # no polling after a refused restart


def test_systemd_restart_that_keeps_the_old_pid_times_out() -> None:
    runner = ScriptedRunner(show=[ok("systemctl-show-active.txt")], restart=[(0, "", "")])

    with pytest.raises(RestartFailed, match=r"did not come up within 0.5s; .*still the process from before"):
        systemd(runner).restart(settle_s=0.1)


def test_systemd_restart_into_start_limit_is_fatal() -> None:
    runner = ScriptedRunner(
        show=[ok("systemctl-show-active.txt"), ok("systemctl-show-start-limit-hit.txt")],
        restart=[(0, "", "")],
    )

    with pytest.raises(RestartFailed, match=r"entered failed .*start-limit-hit"):
        systemd(runner).restart(settle_s=0.1)


def test_systemd_check_explains_a_host_without_systemd() -> None:
    no_systemd = systemd(ScriptedRunner(show=[(1, "", recorded("systemctl-show-no-systemd.stderr"))]))
    no_user_bus = systemd(
        ScriptedRunner(show=[(1, "", recorded("systemctl-user-show-no-bus.stderr"))]), user=True
    )
    missing = systemd(ScriptedRunner(show=[ok("systemctl-show-not-found.txt")]))

    assert no_systemd.check() == (
        "systemd: web.service: `systemctl show` failed (exit 1): System has not been booted with systemd as "
        "init system (PID 1). Can't operate.\nFailed to connect to bus: Host is down: systemd is not running "
        "here; choose another manager type"
    )
    assert "No medium found: the user's systemd" in (no_user_bus.check() or "")
    assert missing.check() == (
        "systemd: web.service: unit not found; check the name with `systemctl list-units --all`"
    )
    with pytest.raises(ServiceError, match="has not been booted with systemd"):
        no_systemd.status()


def test_systemd_check_with_missing_binary(tmp_path: Path) -> None:
    manager = SystemdManager("web", unit="web.service", systemctl=str(tmp_path / "systemctl"))

    assert manager.check() == f"systemctl binary {tmp_path / 'systemctl'} does not exist"


def test_systemd_production_runner_runs_the_real_systemctl() -> None:
    manager = SystemdManager("web", unit="healbot-test-no-such-unit.service", timeout_s=10)

    problem = manager.check()  # here: systemd not booted; on a systemd host: unit not found

    assert problem is not None
    assert problem.startswith("systemd: healbot-test-no-such-unit.service: ")


def test_systemd_show_parsing_keeps_values_with_equals_and_status_text() -> None:
    text = "MainPID=7\nStatusText=Ready: queue=3\nResult=success\nActiveState=active\nSubState=running\n"

    status = parse_show(text, "web.service")

    assert status.detail == "active (running), status: Ready: queue=3"


@pytest.mark.parametrize(
    ("options", "key", "message"),
    [
        ({}, "unit", "is required"),
        ({"unit": "--all"}, "unit", "must be a unit name"),
        ({"unit": "web.service", "user": "yes"}, "user", "must be true or false"),
        ({"unit": "web.service", "systemctl": 1}, "systemctl", "must be a string"),
        ({"unit": "web.service", "scope": "user"}, "scope", "unknown option"),
    ],
)
def test_systemd_from_options_rejects_bad_tables(options: dict[str, object], key: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        SystemdManager.from_options("web", options, "/etc/healbot.toml")

    assert error.value.key == f"services.web.manager.{key}"


def test_systemd_from_options_defaults() -> None:
    manager = SystemdManager.from_options("web", {"unit": "web.service", "user": True}, "/etc/healbot.toml")

    assert (manager.unit, manager.user, manager.systemctl, manager.timeout_s) == (
        "web.service",
        True,
        "systemctl",
        90,
    )


# --- docker ------------------------------------------------------------------------------------------

INSPECT_ARGV = ["docker", "inspect", "--type", "container", "web"]


@pytest.mark.parametrize(
    ("recording", "state", "pid", "restarts", "detail"),
    [
        ("docker-inspect-running.json", ServiceState.RUNNING, 51234, 0, "running, health healthy"),
        (
            "docker-inspect-restarting.json",
            ServiceState.CRASH_LOOP,
            None,
            7,
            "restarting, last exit code 1, health unhealthy (3 failing checks in a row), "
            "restarted 7 times by docker",
        ),
        ("docker-inspect-exited.json", ServiceState.FATAL, None, 0, "exited, last exit code 1"),
    ],
)
def test_docker_status_from_recorded_inspect(
    recording: str, state: ServiceState, pid: int | None, restarts: int, detail: str
) -> None:
    runner = ScriptedRunner(inspect=[ok(recording)])

    status = docker(runner).status()

    assert (status.state, status.pid, status.restarts, status.detail) == (state, pid, restarts, detail)
    assert runner.calls == [INSPECT_ARGV]
    assert DOCKER_SECRET not in repr(status)


def test_docker_log_path_comes_from_inspect() -> None:
    paths = docker(ScriptedRunner(inspect=[ok("docker-inspect-running.json")])).log_paths()

    container_id = "3f1c9a7be2d54e6c8a0f4b1d2e3c5a6978b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4"
    assert tuple(paths) == (f"/var/lib/docker/containers/{container_id}/{container_id}-json.log",)


def test_docker_restart_waits_for_the_new_pid_to_stay_up() -> None:
    runner = ScriptedRunner(
        inspect=[ok("docker-inspect-running.json"), ok("docker-inspect-running-restarted.json")],
        restart=[(0, "web\n", "")],
    )

    status = docker(runner).restart(settle_s=0.3)

    assert (status.state, status.pid) == (ServiceState.RUNNING, 51377)
    assert runner.calls[:2] == [INSPECT_ARGV, ["docker", "restart", "web"]]
    assert all(call == INSPECT_ARGV for call in runner.calls[2:])


def test_docker_restart_into_a_crash_loop_fails_without_leaking_the_environment() -> None:
    runner = ScriptedRunner(
        inspect=[ok("docker-inspect-running.json"), ok("docker-inspect-restarting.json")],
        restart=[(0, "web\n", "")],
    )

    with pytest.raises(RestartFailed) as failure:
        docker(runner).restart(settle_s=1)

    assert str(failure.value).startswith("docker: web entered restarting, last exit code 1")
    assert DOCKER_SECRET not in str(failure.value)


def test_docker_restart_of_a_missing_container_reports_docker_words() -> None:
    runner = ScriptedRunner(
        inspect=[ok("docker-inspect-exited.json")],
        restart=[(1, "", "Error response from daemon: No such container: web\n")],
    )

    with pytest.raises(
        RestartFailed, match="`docker restart` failed \\(exit 1\\): Error response from daemon"
    ):
        docker(runner).restart(settle_s=0.1)


def test_docker_check_explains_a_missing_daemon_and_container() -> None:
    no_daemon = docker(
        ScriptedRunner(
            inspect=[
                (1, recorded("docker-inspect-no-daemon.stdout"), recorded("docker-inspect-no-daemon.stderr"))
            ]
        )
    )
    no_container = docker(ScriptedRunner(inspect=[(1, "[]\n", "Error: No such container: web\n")]))

    assert no_daemon.check() == (
        "docker: web: `docker inspect` failed (exit 1): Cannot connect to the Docker daemon at "
        "unix:///var/run/docker.sock. Is the docker daemon running?: start dockerd, or check that healbot's "
        "user may use its socket"
    )
    assert no_container.check() == (
        "docker: web: `docker inspect` failed (exit 1): Error: No such container: web: "
        "check the name with `docker ps -a`"
    )
    with pytest.raises(ServiceError, match="Cannot connect to the Docker daemon"):
        no_daemon.status()


def test_docker_production_runner_runs_the_real_cli() -> None:
    manager = DockerManager("web", container="healbot-test-no-such-container", timeout_s=20)

    problem = manager.check()  # here: no daemon (or no docker CLI); elsewhere: no such container

    assert problem is not None


def test_docker_inspect_parsing_never_quotes_its_input() -> None:
    with pytest.raises(ServiceError) as not_json:
        parse_inspect('[{"Config": {"Env": ["DATABASE_URL=' + DOCKER_SECRET)
    with pytest.raises(ServiceError, match="exactly one container"):
        parse_inspect("[]")

    assert DOCKER_SECRET not in str(not_json.value)


@pytest.mark.parametrize(
    ("options", "key", "message"),
    [
        ({}, "container", "is required"),
        ({"container": "-f"}, "container", "must be a container name"),
        ({"container": "web", "binary": ""}, "binary", "must not be empty"),
        ({"container": "web", "timeout_s": -5}, "timeout_s", "greater than 0"),
        ({"container": "web", "image": "web:1"}, "image", "unknown option"),
    ],
)
def test_docker_from_options_rejects_bad_tables(options: dict[str, object], key: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        DockerManager.from_options("web", options, "/etc/healbot.toml")

    assert error.value.key == f"services.web.manager.{key}"
    assert str(error.value).startswith(f"/etc/healbot.toml: services.web.manager.{key}: ")
