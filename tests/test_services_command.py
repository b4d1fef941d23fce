"""CommandManager with real processes (a pidfile-based control script around tiny_service), and the settle
rules every manager shares (healers/services/base.py)."""

from __future__ import annotations

import json
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from bot.errors import ConfigError, RestartFailed, ServiceError
from bot.models import ServiceState, ServiceStatus
from healers.services.base import run_command, wait_until_settled
from healers.services.command import CommandManager
from tests.fakes.supervisor_env import TINY_SERVICE
from tests.helpers import free_port, wait_until

CONTROL_SCRIPT = textwrap.dedent(
    """
    import os, subprocess, sys, time

    pidfile, port, log, action = sys.argv[1:5]

    def pid():
        try:
            return int(open(pidfile).read())
        except (OSError, ValueError):
            return None

    def alive(p):
        try:
            return open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    def wait(condition):
        deadline = time.monotonic() + 10
        while not condition():
            if time.monotonic() > deadline:
                sys.exit("timed out")
            time.sleep(0.02)

    if action == "status":
        sys.exit(0 if pid() and alive(pid()) else 3)
    if action == "fail":
        sys.exit(print("cannot restart: config broken", file=sys.stderr) or 2)
    old = pid()
    if old and alive(old):
        os.kill(old, 15)
        wait(lambda: not alive(old))
    if os.path.exists(pidfile):
        os.unlink(pidfile)
    env = dict(os.environ, PORT=port, PIDFILE=pidfile)
    with open(log, "ab") as out:
        subprocess.Popen([sys.executable, TINY], env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                         start_new_session=True)
    wait(lambda: pid() is not None)
    """
).replace("TINY", repr(str(TINY_SERVICE)))


@dataclass
class Controlled:
    """A tiny_service started and stopped by a control script: restart | status | fail."""

    pidfile: Path
    port: int
    script_argv: tuple[str, ...]

    def argv(self, action: str) -> list[str]:
        return [*self.script_argv, action]

    def manager(self, *, status: bool = True, pidfile: bool = True, timeout_s: float = 10) -> CommandManager:
        return CommandManager(
            "web",
            restart=self.argv("restart"),
            status=self.argv("status") if status else None,
            pidfile=str(self.pidfile) if pidfile else None,
            timeout_s=timeout_s,
        )

    def health_pid(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as response:
            return int(json.load(response)["pid"])

    def pid(self) -> int:
        return int(self.pidfile.read_text())


@pytest.fixture
def controlled(tmp_path: Path) -> Iterator[Controlled]:
    script = tmp_path / "control.py"
    script.write_text(CONTROL_SCRIPT)
    port = free_port()
    pidfile = tmp_path / "web.pid"
    argv = (sys.executable, str(script), str(pidfile), str(port), str(tmp_path / "web.log"))
    yield Controlled(pidfile, port, argv)
    try:  # stop the service the control script left running, if it is still ours
        service = psutil.Process(int(pidfile.read_text()))
        if str(TINY_SERVICE) in service.cmdline():
            service.terminate()
            wait_until(lambda: not _alive(service), what="the service to stop")
    except (OSError, ValueError, psutil.Error):
        pass


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _gone(pid: int) -> bool:
    try:
        return not _alive(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return True


def test_status_reads_the_pidfile_and_treats_dead_pids_as_stopped(controlled: Controlled) -> None:
    manager = controlled.manager(status=False)
    assert manager.status() == ServiceStatus(
        ServiceState.STOPPED, detail=f"no valid pid in {controlled.pidfile}"
    )

    run_command(controlled.argv("restart"), timeout_s=10)
    running = manager.status()
    assert running.state is ServiceState.RUNNING
    assert running.pid == controlled.health_pid()

    psutil.Process(running.pid).terminate()
    stopped = wait_until(lambda: (s := manager.status()).state is ServiceState.STOPPED and s, what="stopped")
    assert stopped.detail == f"pid {running.pid} from {controlled.pidfile} is not running"


def test_restart_returns_a_new_process_that_stayed_up(controlled: Controlled) -> None:
    run_command(controlled.argv("restart"), timeout_s=10)
    old_pid = controlled.pid()

    status = controlled.manager().restart(settle_s=1)

    assert status.state is ServiceState.RUNNING
    assert status.pid not in (None, old_pid)
    assert status.pid == controlled.health_pid()
    assert _gone(old_pid)


def test_failing_restart_command_reports_its_output_and_leaves_the_service_alone(
    controlled: Controlled,
) -> None:
    run_command(controlled.argv("restart"), timeout_s=10)
    pid = controlled.pid()
    manager = CommandManager("web", restart=controlled.argv("fail"), pidfile=str(controlled.pidfile))

    with pytest.raises(RestartFailed) as failure:
        manager.restart(settle_s=1)

    assert (
        str(failure.value)
        == "command: web: restart command exited with code 2: cannot restart: config broken"
    )
    assert controlled.health_pid() == pid


def test_a_service_that_dies_during_the_settle_period_fails_the_restart(
    controlled: Controlled, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash_flag = tmp_path / "crash"
    crash_flag.touch()
    monkeypatch.setenv("CRASH_FLAG", str(crash_flag))  # inherited by the control script and the service

    with pytest.raises(RestartFailed) as failure:
        controlled.manager().restart(settle_s=2)

    assert str(failure.value).startswith("command: web came up (pid ")
    assert "but then entered status command exit 3 within 2s of the restart" in str(failure.value)


def test_restart_without_status_or_pidfile_cannot_verify_and_says_so(controlled: Controlled) -> None:
    status = controlled.manager(status=False, pidfile=False).restart(settle_s=1)

    assert status.state is ServiceState.UNKNOWN
    assert "no status command or pidfile configured" in status.detail


def test_restart_command_timeout_kills_its_whole_process_group(tmp_path: Path) -> None:
    child_pidfile = tmp_path / "child.pid"
    hang = [sys.executable, "-c", (
        "import subprocess, time\n"
        f"child = subprocess.Popen(['sleep', '60'])\nopen({str(child_pidfile)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)"
    )]  # fmt: skip

    with pytest.raises(RestartFailed, match=r"did not finish within 0.5s and was killed"):
        CommandManager("web", restart=hang, timeout_s=0.5).restart(settle_s=1)

    child = int(wait_until(child_pidfile.read_text, what="child pid"))
    wait_until(
        lambda: _gone(child),
        what="the grandchild to be killed with the group",
    )


def test_a_restart_command_that_leaves_a_daemon_behind_returns_at_once(tmp_path: Path) -> None:
    daemon_pidfile = tmp_path / "daemon.pid"
    spawn = [sys.executable, "-c", (
        "import subprocess\n"  # the daemon inherits stdout/stderr: pipes would stay open for 60 s
        f"open({str(daemon_pidfile)!r}, 'w').write(str(subprocess.Popen(['sleep', '60']).pid))"
    )]  # fmt: skip
    try:
        result = run_command(spawn, timeout_s=5)
        assert result.returncode == 0
    finally:
        if daemon_pidfile.exists():
            psutil.Process(int(daemon_pidfile.read_text())).kill()


def test_status_command_failure_is_stopped_with_its_exit_code(controlled: Controlled) -> None:
    status = controlled.manager().status()

    assert status == ServiceStatus(ServiceState.STOPPED, detail="status command exit 3")


def test_check_names_missing_commands_and_pidfile_folders(tmp_path: Path) -> None:
    ok = CommandManager(
        "web", restart=[sys.executable, "-V"], status=["true"], pidfile=str(tmp_path / "w.pid")
    )
    broken = CommandManager(
        "web", restart=[str(tmp_path / "webctl"), "restart"], status=["no-such-webctl"],
        pidfile=str(tmp_path / "missing" / "w.pid"),
    )  # fmt: skip

    assert ok.check() is None
    assert broken.check() == (
        f"command {tmp_path / 'webctl'} does not exist; command 'no-such-webctl' is not on the PATH: use an "
        f"absolute path; the folder of pidfile {tmp_path / 'missing' / 'w.pid'} does not exist"
    )
    with pytest.raises(ServiceError, match="command not found: no-such-webctl"):
        broken.status()


def test_from_options_builds_argv_lists_and_resolves_the_pidfile(tmp_path: Path) -> None:
    manager = CommandManager.from_options(
        "web",
        {
            "restart": ["webctl", "restart"],
            "status": ["webctl", "status"],
            "pidfile": "run/web.pid",
            "timeout_s": 5,
        },
        str(tmp_path / "healbot.toml"),
    )

    assert manager.restart_argv == ("webctl", "restart")
    assert manager.status_argv == ("webctl", "status")
    assert manager.pidfile == str(tmp_path / "run/web.pid")
    assert manager.timeout_s == 5.0


@pytest.mark.parametrize(
    ("options", "key", "message"),
    [
        ({}, "restart", "is required"),
        ({"restart": "webctl restart"}, "restart", "must be a non-empty argv list"),
        ({"restart": []}, "restart", "must be a non-empty argv list"),
        ({"restart": ["webctl", 1]}, "restart", "must be a list of non-empty strings"),
        ({"restart": ["webctl"], "status": [""]}, "status", "must be a list of non-empty strings"),
        ({"restart": ["webctl"], "pidfile": 12}, "pidfile", "must be a string"),
        ({"restart": ["webctl"], "timeout_s": True}, "timeout_s", "must be a number"),
        (
            {"restart": ["webctl"], "timeout_s": float("inf")},
            "timeout_s",
            "must be a number greater than 0 and at most 86400 seconds",
        ),
        (
            {"restart": ["webctl"], "timeout_s": float("nan")},
            "timeout_s",
            "must be a number greater than 0 and at most 86400 seconds",
        ),
        ({"restart": ["webctl"], "shell": True}, "shell", "unknown option"),
    ],
)
def test_from_options_rejects_bad_tables(
    tmp_path: Path, options: dict[str, object], key: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        CommandManager.from_options("web", options, str(tmp_path / "healbot.toml"))

    assert error.value.key == f"services.web.manager.{key}"


# --- the settle rules (healers/services/base.py) ------------------------------------------------------


def scripted(*statuses: ServiceStatus | Exception) -> Iterator[ServiceStatus]:
    """Status reads in order; the last one repeats."""
    for item in statuses[:-1]:
        if isinstance(item, Exception):
            raise item
        yield item
    while True:
        last = statuses[-1]
        if isinstance(last, Exception):
            raise last
        yield last


def settle(*statuses: ServiceStatus | Exception, old_pid: int | None = None) -> ServiceStatus:
    reads = scripted(*statuses)
    return wait_until_settled(
        lambda: next(reads),
        label="pm2: web",
        settle_s=0.3,
        start_timeout_s=0.3,
        old_pid=old_pid,
        interval_s=0.01,
    )


RUNNING_10 = ServiceStatus(ServiceState.RUNNING, pid=10, restarts=1, detail="online")


def test_settle_waits_through_starting_and_returns_the_last_status() -> None:
    starting = ServiceStatus(ServiceState.STARTING, pid=10, detail="launching")

    assert settle(starting, starting, RUNNING_10, old_pid=9) == RUNNING_10


@pytest.mark.parametrize(
    ("statuses", "message"),
    [
        (
            [ServiceStatus(ServiceState.FATAL, detail="errored (restarts 3)")],
            "pm2: web entered errored (restarts 3)",
        ),
        (
            [RUNNING_10, ServiceStatus(ServiceState.RUNNING, pid=11, restarts=2)],
            "pm2: web was restarted again within 0.3s of the restart (pid 10 → 11): it is crash-looping",
        ),
        (
            [RUNNING_10, ServiceStatus(ServiceState.RUNNING, pid=10, restarts=4)],
            "pm2: web was restarted 3 more time(s) by its manager within 0.3s of the restart "
            "(restart counter 1 → 4): it is crash-looping",
        ),
        (
            [RUNNING_10, ServiceStatus(ServiceState.CRASH_LOOP, detail="waiting restart")],
            "pm2: web came up (pid 10) but then entered waiting restart within 0.3s of the restart",
        ),
        (
            [ServiceStatus(ServiceState.STOPPED, detail="stopped")],
            "pm2: web did not come up within 0.3s; last seen: stopped",
        ),
        (
            [RUNNING_10, ServiceError("pm2 jlist: command not found: pm2")],
            "pm2: web: could not read its status after the restart: pm2 jlist: command not found: pm2",
        ),
    ],
)
def test_settle_failures_say_what_was_seen(statuses: list[ServiceStatus | Exception], message: str) -> None:
    with pytest.raises(RestartFailed) as failure:
        settle(*statuses)

    assert str(failure.value) == message


def test_settle_does_not_mistake_the_old_process_for_the_new_one() -> None:
    with pytest.raises(RestartFailed, match="still the process from before the restart"):
        settle(RUNNING_10, old_pid=10)
