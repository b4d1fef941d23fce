"""deploy/sudoers.d/healbot and deploy/polkit-1/rules.d/50-healbot.rules against the real programs: Debian's
`visudo -c` and sudo (unpacked by `make tools`), and polkit inside the session's booted systemd
(tests/fakes/systemd_env.py). Each grants exactly its restart and nothing more, as the healbot user; and
from a unit with deploy/healbot.service's hardening (NoNewPrivileges= above all), sudo is refused and
polkit still works."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.errors import RestartFailed, SourceError
from bot.sources.journald import JournaldSource
from healers.services.systemd import SystemdManager
from tests.conftest import REPO_ROOT
from tests.fakes.systemd_env import SystemdEnv, sudo_package

SUDOERS = REPO_ROOT / "deploy" / "sudoers.d" / "healbot"
POLKIT_RULE = REPO_ROOT / "deploy" / "polkit-1" / "rules.d" / "50-healbot.rules"
GRANTED, OTHER = "web.service", "other.service"
SLEEPER = "[Service]\nExecStart=/bin/sleep 1000\n"
AS_HEALBOT = ("setpriv", "--reuid=healbot", "--regid=healbot", "--init-groups")
UNIT = REPO_ROOT / "deploy" / "healbot.service"
HARDENING_KEYS = (  # deploy/healbot.service's, on a transient unit run as healbot (ReadWritePaths= aside)
    "NoNewPrivileges",
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectControlGroups",
    "RestrictSUIDSGID",
    "LockPersonality",
)


def unit_hardening() -> list[str]:
    values = dict(
        line.split("=", 1) for line in UNIT.read_text().splitlines() if "=" in line and line[0] != "#"
    )
    assert set(HARDENING_KEYS) <= set(values), f"{UNIT.name} lost one of {HARDENING_KEYS}"
    return [f"{key}={values[key]}" for key in HARDENING_KEYS]


def sudo_dir() -> Path:
    return sudo_package() or pytest.fail("Debian's sudo is not unpacked: run `make tools`")


def visudo(path: Path) -> subprocess.CompletedProcess[str]:
    package = sudo_dir()
    return subprocess.run(
        [str(package / "usr/sbin/visudo"), "-c", "-f", str(path)],
        env={**os.environ, "LD_LIBRARY_PATH": str(package / "usr/libexec/sudo")},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_visudo_accepts_the_sudoers_example() -> None:
    result = visudo(SUDOERS)
    assert result.returncode == 0 and "parsed OK" in result.stdout, result.stdout + result.stderr


def test_visudo_rejects_a_command_without_its_full_path(tmp_path: Path) -> None:
    broken = tmp_path / "healbot"
    broken.write_text(SUDOERS.read_text().replace("/usr/bin/systemctl restart", "systemctl restart"))
    result = visudo(broken)
    assert result.returncode == 1 and "fully-qualified path" in result.stderr, result.stdout + result.stderr


@pytest.fixture(scope="module")
def server(systemd: SystemdEnv) -> Iterator[SystemdEnv]:
    """The healbot user, sudo with the example installed, two units: one granted, one not."""
    systemd.install_sudo(sudo_dir())
    created = systemd.run("id", "healbot", check=False).returncode != 0
    if created:
        systemd.run(
            "useradd", "--system", "--home-dir", "/var/lib/healbot", "--shell", "/usr/sbin/nologin", "healbot"
        )
    systemd.run("install", "-m", "0440", str(SUDOERS), "/etc/sudoers.d/healbot")
    systemd.run("visudo", "-c")  # the installed whole, as its README line says
    for name in (GRANTED, OTHER):
        systemd.write_unit(name, SLEEPER, reload=False)
    systemd.systemctl("daemon-reload")
    systemd.systemctl("start", GRANTED, OTHER)
    try:
        yield systemd
    finally:
        for name in (GRANTED, OTHER):
            systemd.remove_unit(name)
        systemd.run("rm", "-f", "/etc/sudoers.d/healbot", "/etc/polkit-1/rules.d/50-healbot.rules")
        if created:  # the README walkthrough adds its own with `useradd`, in the same session's systemd
            systemd.run("userdel", "healbot")


def main_pid(env: SystemdEnv, unit: str) -> str:
    return env.show(unit, "MainPID")["MainPID"]


def as_healbot(env: SystemdEnv, *argv: str) -> subprocess.CompletedProcess[str]:
    return env.run(*AS_HEALBOT, *argv, check=False)


def test_sudo_grants_the_healbot_user_exactly_the_restart_it_lists(server: SystemdEnv) -> None:
    before = main_pid(server, GRANTED)

    granted = as_healbot(server, "sudo", "-n", "/usr/bin/systemctl", "restart", GRANTED)

    assert granted.returncode == 0, granted.stderr
    assert main_pid(server, GRANTED) != before
    other_before = main_pid(server, OTHER)
    refused = as_healbot(server, "sudo", "-n", "/usr/bin/systemctl", "restart", OTHER)
    assert refused.returncode == 1 and "a password is required" in refused.stderr
    assert main_pid(server, OTHER) == other_before
    assert as_healbot(server, "sudo", "-n", "/usr/bin/id").returncode == 1


def hardened_as_healbot(env: SystemdEnv, *argv: str) -> subprocess.CompletedProcess[str]:
    properties = [arg for prop in unit_hardening() for arg in ("-p", prop)]
    return env.run(
        "systemd-run", "--wait", "--pipe", "--quiet", "-p", "User=healbot", *properties, *argv, check=False
    )


def test_sudo_is_refused_in_a_unit_with_no_new_privileges_as_healbot_service_runs(server: SystemdEnv) -> None:
    result = hardened_as_healbot(server, "sudo", "-n", "/usr/bin/systemctl", "restart", GRANTED)
    assert result.returncode != 0
    assert 'The "no new privileges" flag is set' in result.stderr, result.stderr


def test_the_polkit_rule_lets_the_hardened_healbot_restart_exactly_its_units(server: SystemdEnv) -> None:
    rule = POLKIT_RULE.read_text()
    assert 'var HEALBOT_UNITS = ["web.service"];' in rule  # the example's unit, the one granted here
    (server.root / "etc/polkit-1/rules.d/50-healbot.rules").write_text(rule)
    server.systemctl("try-restart", "polkit.service")  # rules are read at its start (it may not run yet)
    before, other_before = main_pid(server, GRANTED), main_pid(server, OTHER)

    granted = hardened_as_healbot(server, "systemctl", "restart", GRANTED)
    refused = hardened_as_healbot(server, "systemctl", "restart", OTHER)

    assert granted.returncode == 0, granted.stderr
    assert main_pid(server, GRANTED) != before
    assert refused.returncode != 0 and "Interactive authentication required" in refused.stderr
    assert main_pid(server, OTHER) == other_before
    status = SystemdManager("web", unit=GRANTED, systemctl=server.systemctl_bin).status()
    assert status.pid == int(main_pid(server, GRANTED))


def as_healbot_wrapper(env: SystemdEnv, tool: str, directory: Path) -> str:
    """`tool` run as the healbot user inside the namespace, the way the daemon under its unit runs it."""
    wrapper = directory / f"{tool}-as-healbot"
    enter = " ".join(env.argv(*AS_HEALBOT, tool))
    wrapper.write_text(f'#!/bin/sh\nexec {enter} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def test_restart_refused_by_polkit_says_which_rule_allows_it(server: SystemdEnv, tmp_path: Path) -> None:
    """systemctl's "Interactive authentication required" said nothing of what to do about it."""
    systemctl = as_healbot_wrapper(server, "systemctl", tmp_path)
    manager = SystemdManager("other", unit=OTHER, systemctl=systemctl, timeout_s=20)

    with pytest.raises(RestartFailed) as error:
        manager.restart(settle_s=0.2)

    assert "Interactive authentication required" in str(error.value)
    assert f"may not restart {OTHER}: list {OTHER} in deploy/polkit-1/rules.d/50-healbot.rules" in str(
        error.value
    )


def test_journal_unreadable_without_its_group_says_which_group(server: SystemdEnv, tmp_path: Path) -> None:
    """journalctl's "insufficient permissions" left the operator to guess the systemd-journal group."""
    source = JournaldSource("web", GRANTED, binary=as_healbot_wrapper(server, "journalctl", tmp_path))
    # the README walkthrough, in the same session's systemd, may have added its healbot user to the group
    server.run("gpasswd", "-d", "healbot", "systemd-journal", check=False)

    with pytest.raises(SourceError) as error:
        source.read(None)

    assert "insufficient permissions" in str(error.value)
    assert "add it to the systemd-journal group" in str(error.value)
    server.run("usermod", "-aG", "systemd-journal", "healbot")
    try:
        assert source.read(None).cursor  # in the group, the same reader reads
    finally:
        server.run("gpasswd", "-d", "healbot", "systemd-journal")
