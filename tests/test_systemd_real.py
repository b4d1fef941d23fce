"""SystemdManager against a real systemd 252 booted in namespaces (tests/fakes/systemd_env.py)."""

from __future__ import annotations

import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from bot.errors import RestartFailed
from bot.models import ServiceState
from bot.policy import manager_storm_reason
from healers.services.systemd import SystemdManager
from tests.fakes.daemon_proc import HEALBOT
from tests.fakes.systemd_env import SystemdEnv
from tests.fakes.world import toml_table
from tests.helpers import make_repo, wait_until


def manager(env: SystemdEnv, unit: str, timeout_s: float = 20.0) -> SystemdManager:
    return SystemdManager(
        unit.removesuffix(".service"), unit=unit, systemctl=env.systemctl_bin, timeout_s=timeout_s
    )


def test_the_session_systemd_is_up_with_journald_and_dbus(systemd: SystemdEnv) -> None:
    assert systemd.state in ("running", "degraded"), systemd.failed_units()
    for unit in ("systemd-journald.service", "dbus.service"):
        assert systemd.show(unit, "ActiveState")["ActiveState"] == "active"


def test_status_of_a_running_unit_has_its_main_pid(systemd: SystemdEnv) -> None:
    with systemd.unit("hb-sleep.service", "[Service]\nExecStart=/bin/sleep 1000\n"):
        status = manager(systemd, "hb-sleep.service").status()
        assert status.state is ServiceState.RUNNING
        assert status.pid == int(systemd.show("hb-sleep.service", "MainPID")["MainPID"]) > 1


def test_restart_gives_a_new_pid_that_stayed_up(systemd: SystemdEnv) -> None:
    with systemd.unit("hb-restart.service", "[Service]\nExecStart=/bin/sleep 1000\n"):
        web = manager(systemd, "hb-restart.service")
        before = web.status()

        after = web.restart(settle_s=0.3)

        assert after.state is ServiceState.RUNNING
        assert after.pid not in (None, before.pid)
        assert after.pid == int(systemd.show("hb-restart.service", "MainPID")["MainPID"])


def test_a_crash_restarted_by_restart_always_counts_in_nrestarts(systemd: SystemdEnv) -> None:
    unit = "[Service]\nExecStart=/bin/sleep 1000\nRestart=always\nRestartSec=100ms\n"
    with systemd.unit("hb-crash.service", unit):
        web = manager(systemd, "hb-crash.service")
        first = web.status()
        systemd.systemctl("kill", "--signal=KILL", "hb-crash.service")

        again = wait_until(
            lambda: (s := web.status()).restarts == 1 and s.state is ServiceState.RUNNING and s,
            what="restarted once",
        )

        assert again.pid != first.pid
        assert "restarted 1 times by systemd" in again.detail


def test_waiting_between_automatic_restarts_is_a_crash_loop(systemd: SystemdEnv) -> None:
    unit = "[Service]\nExecStart=/bin/sh -c 'exit 3'\nRestart=always\nRestartSec=1h\n"
    with systemd.unit("hb-loop.service", unit, start=False):
        systemd.systemctl("start", "--no-block", "hb-loop.service")
        web = manager(systemd, "hb-loop.service")

        status = wait_until(
            lambda: (s := web.status()).state is ServiceState.CRASH_LOOP and s, what="auto-restart"
        )

        assert "auto-restart" in status.detail and "(3)" in status.detail
        assert manager_storm_reason(status.state, status.detail) is not None


START_LIMITED = (
    "[Unit]\nStartLimitBurst=3\nStartLimitIntervalSec=1h\n"
    "[Service]\nExecStart=/bin/false\nRestart=always\nRestartSec=50ms\n"
)


def test_start_limit_hit_by_automatic_restarts_is_named_though_result_stays_exit_code(
    systemd: SystemdEnv,
) -> None:
    """systemd 252 keeps Result=exit-code (the first failure) when Restart= runs into StartLimitBurst."""
    with systemd.unit("hb-limit.service", START_LIMITED, start=False):
        systemd.systemctl("start", "--no-block", "hb-limit.service")
        web = manager(systemd, "hb-limit.service")

        status = wait_until(lambda: (s := web.status()).state is ServiceState.FATAL and s, what="failed")

        assert systemd.show("hb-limit.service", "Result")["Result"] == "exit-code"
        assert (
            "gave up restarting it: it hit its start limit" in status.detail
            and "reset-failed hb-limit.service" in status.detail
        )
        assert status.restarts is not None and status.restarts >= 2
        reason = manager_storm_reason(status.state, status.detail)
        assert reason is not None and "start limit" in reason


def test_restart_refused_by_the_start_limit_says_start_limit_not_only_control_process(
    systemd: SystemdEnv,
) -> None:
    with systemd.unit("hb-limit2.service", START_LIMITED, start=False):
        systemd.systemctl("start", "--no-block", "hb-limit2.service")
        web = manager(systemd, "hb-limit2.service")
        wait_until(lambda: web.status().state is ServiceState.FATAL, what="failed")

        with pytest.raises(RestartFailed) as error:
            web.restart(settle_s=0.2)

        assert "before the restart it was failed" in str(error.value)
        assert "start limit" in str(error.value)


MASKS = {
    "mask": ("mask",),
    "mask-runtime": ("mask", "--runtime"),
}


@pytest.mark.parametrize("how", [*MASKS, "dev-null-link"])
def test_masked_unit_is_reported_as_masked_by_status_check_and_restart(systemd: SystemdEnv, how: str) -> None:
    name = f"hb-{how}.service"
    if how == "dev-null-link":
        (systemd.root / "etc/systemd/system" / name).symlink_to("/dev/null")
        systemd.systemctl("daemon-reload")
    else:
        systemd.systemctl(*MASKS[how], name)
    web = manager(systemd, name)
    try:
        status = web.status()
        assert status.state is ServiceState.STOPPED and f"unit {name} is masked" in status.detail
        assert f"systemctl unmask {name}" in status.detail
        problem = web.check()
        assert problem is not None and "masked" in problem
        with pytest.raises(RestartFailed, match="is masked"):
            web.restart(settle_s=0.2)
    finally:
        systemd.systemctl("unmask", *MASKS.get(how, ("unmask",))[1:], name)
        systemd.remove_unit(name)


def test_a_missing_unit_is_unknown_and_check_names_it(systemd: SystemdEnv) -> None:
    web = manager(systemd, "hb-no-such-unit.service")

    status = web.status()

    assert status.state is ServiceState.UNKNOWN and "not found" in status.detail
    problem = web.check()
    assert problem is not None and "unit not found" in problem
    with pytest.raises(RestartFailed):
        web.restart(settle_s=0.2)


@pytest.mark.parametrize(
    "service",
    [
        "ExecStartPre=/bin/sleep 1000\nExecStart=/bin/sleep 1000\n",
        "Type=notify\nExecStart=/bin/sleep 1000\n",  # never sends READY=1
    ],
    ids=["start-pre-hangs", "never-notifies"],
)
def test_restart_that_hangs_past_timeout_fails_in_time(systemd: SystemdEnv, service: str) -> None:
    with systemd.unit("hb-hang.service", f"[Service]\n{service}TimeoutStartSec=1h\n", start=False):
        web = manager(systemd, "hb-hang.service", timeout_s=1.5)
        started = time.monotonic()

        with pytest.raises(RestartFailed) as error:
            web.restart(settle_s=0.2)

        assert time.monotonic() - started < 10
        assert "did not finish within 1.5s" in str(error.value)
        assert web.status().state is ServiceState.STARTING
        assert systemd.show("hb-hang.service", "ActiveState")["ActiveState"] == "activating"


def test_check_of_a_failed_unit_reports_it_instead_of_reachable(systemd: SystemdEnv) -> None:
    with systemd.unit("hb-failed.service", "[Service]\nExecStart=/bin/false\n", start=False):
        systemd.systemctl("start", "hb-failed.service", check=False)
        web = manager(systemd, "hb-failed.service")
        wait_until(lambda: web.status().state is ServiceState.FATAL, what="failed")

        problem = web.check()

        assert problem is not None and "unit has failed: failed (failed), Result=exit-code" in problem
        assert "systemctl reset-failed hb-failed.service" in problem


def healbot(env: SystemdEnv, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real CLI, finding the namespace's systemctl/journalctl wrappers first on PATH."""
    return subprocess.run(
        [HEALBOT, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env.path_env(),
        cwd=cwd,
        check=False,
    )


def test_init_finds_the_running_units_and_writes_them(systemd: SystemdEnv, tmp_path: Path) -> None:
    with systemd.unit("hb-shop.service", "[Service]\nExecStart=/bin/sleep 1000\n"):
        result = healbot(systemd, "init", "--yes", "-o", str(tmp_path / "healbot.toml"), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "found hb-shop" in result.stdout and "systemd" in result.stdout, result.stdout
    written = tomllib.loads((tmp_path / "healbot.toml").read_text())  # repos are /srv placeholders
    assert written["services"]["hb-shop"]["manager"] == {"type": "systemd", "unit": "hb-shop.service"}
    assert "systemd-journald" not in written["services"]  # a unit of a package: see the test below


def test_init_leaves_out_the_running_units_packages_installed_such_as_journald(
    systemd: SystemdEnv, tmp_path: Path
) -> None:
    """init proposed journald, dbus, logind, ... (every running unit) as services to heal with /srv repos."""
    running = systemd.systemctl("list-units", "--type=service", "--state=running", "--no-legend", "--plain")
    assert "systemd-journald.service" in running and "dbus.service" in running

    result = healbot(systemd, "init", "--yes", "-o", str(tmp_path / "healbot.toml"), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    written = tomllib.loads((tmp_path / "healbot.toml").read_text())
    assert not {"systemd-journald", "dbus", "systemd-logind"} & set(written.get("services", {})), written


def doctor_config(tmp_path: Path, units: dict[str, str]) -> Path:
    cfg = tmp_path / "healbot.toml"
    text = toml_table("claude", {"binary": tmp_path / "no-such-claude"})
    for name, unit in units.items():
        text += toml_table(f"services.{name}", {"repo": make_repo(tmp_path / name, {"app.py": "x = 1\n"})})
        text += toml_table(f"services.{name}.manager", {"type": "systemd", "unit": unit})
    cfg.write_text(text)
    return cfg


def test_doctor_reports_a_missing_and_a_failed_unit_and_passes_a_running_one(
    systemd: SystemdEnv, tmp_path: Path
) -> None:
    cfg = doctor_config(
        tmp_path, {"up": "hb-doc-up.service", "gone": "hb-doc-gone.service", "down": "hb-doc-down.service"}
    )
    with (
        systemd.unit("hb-doc-up.service", "[Service]\nExecStart=/bin/sleep 1000\n"),
        systemd.unit("hb-doc-down.service", "[Service]\nExecStart=/bin/false\n", start=False),
    ):
        systemd.systemctl("start", "hb-doc-down.service", check=False)
        wait_until(lambda: systemd.show("hb-doc-down.service", "ActiveState")["ActiveState"] == "failed")
        result = healbot(systemd, "doctor", "-c", str(cfg), cwd=tmp_path)

    assert result.returncode == 1
    assert "✓ up: systemd reachable" in result.stdout, result.stdout
    assert "✓ up: journald:hb-doc-up.service" in result.stdout, result.stdout
    assert "✗ gone: systemd: systemd: hb-doc-gone.service: unit not found" in result.stdout, result.stdout
    assert "✗ down: systemd: systemd: hb-doc-down.service: unit has failed" in result.stdout, result.stdout
