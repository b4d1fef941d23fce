"""A stand-in for `systemctl` and `journalctl`, for the README install walkthrough (systemd cannot run here).

It starts a unit the way systemd would for the keys deploy/healbot.service uses: as `User=`/`Group=`, in
`WorkingDirectory=`, with `StateDirectory=` created for that user, an environment built from scratch
(systemd's default PATH, `Environment=`, `EnvironmentFile=`), in its own mount namespace with the
hardening applied (`ProtectSystem=strict`: every mount read-only but `ReadWritePaths=` and /proc, /sys,
/dev; `PrivateTmp=`: fresh /tmp and /var/tmp; `NoNewPrivileges=`), the service's output to a journal
file, `ExecReload=` with `$MAINPID`, and `KillSignal=` with `TimeoutStopSec=` on stop. Every other key is
one of `NOT_EMULATED`: those are checked by `systemd-analyze verify` in tests/test_deploy.py, not here.
A key outside both sets makes the fake refuse the unit, so a new key cannot slip by untested.

State lives in $FAKE_SYSTEMD_DIR: `<unit>.pid`, `<unit>.journal`, `<unit>.stopped` (the exit status,
written by the `run-unit` process that stays the service's parent, as systemd does).
"""

from __future__ import annotations

import ctypes
import grp
import os
import pwd
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

UNIT_DIR = Path("/etc/systemd/system")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EMULATED = {
    "Unit": {"Description", "Documentation", "After", "Wants"},
    "Service": {
        "Type",
        "User",
        "Group",
        "EnvironmentFile",
        "Environment",
        "ExecStart",
        "ExecReload",
        "KillSignal",
        "TimeoutStopSec",
        "StateDirectory",
        "StateDirectoryMode",
        "WorkingDirectory",
        "StandardOutput",
        "StandardError",
        "SyslogIdentifier",
        "NoNewPrivileges",
        "ProtectSystem",
        "ProtectHome",  # read-only: implied here by ProtectSystem=strict, which makes every mount read-only
        "PrivateTmp",
        "ReadWritePaths",
    },
    "Install": {"WantedBy"},
}
NOT_EMULATED = {
    "Unit": {"StartLimitIntervalSec", "StartLimitBurst"},
    "Service": {
        "Restart",
        "RestartSec",
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectControlGroups",
        "RestrictSUIDSGID",
        "LockPersonality",
    },
    "Install": set(),
}


class UnitError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Unit:
    name: str
    entries: tuple[tuple[str, str, str], ...]  # (section, key, value), in file order

    def values(self, key: str) -> list[str]:
        return [value for _, k, value in self.entries if k == key]

    def value(self, key: str, default: str | None = None) -> str | None:
        found = self.values(key)
        return found[-1] if found else default


def parse_unit(path: Path) -> Unit:
    entries: list[tuple[str, str, str]] = []
    section = ""
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise UnitError(f"{path}:{number}: not a key=value line: {line!r}")
        key = key.strip()
        known = EMULATED.get(section, set()) | NOT_EMULATED.get(section, set())
        if key not in known:
            raise UnitError(
                f"{path}:{number}: [{section}] {key} is neither emulated nor listed as not emulated"
            )
        entries.append((section, key, value.strip()))
    return Unit(path.name.removesuffix(".service"), tuple(entries))


def state_dir() -> Path:
    return Path(os.environ["FAKE_SYSTEMD_DIR"])


def load(name: str) -> Unit:
    path = UNIT_DIR / f"{name.removesuffix('.service')}.service"
    if not path.is_file():
        raise UnitError(f"Unit {path.name} not found.")
    return parse_unit(path)


def read_environment_file(spec: str) -> dict[str, str]:
    optional = spec.startswith("-")
    path = Path(spec.lstrip("-"))
    if not path.exists():
        if optional:
            return {}
        raise UnitError(f"EnvironmentFile {path} is missing")
    env: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip().strip('"')
    return env


def service_environment(unit: Unit, user: pwd.struct_passwd) -> dict[str, str]:
    env = {
        "PATH": DEFAULT_PATH,
        "LANG": "C.UTF-8",
        "HOME": user.pw_dir,
        "USER": user.pw_name,
        "LOGNAME": user.pw_name,
        "SHELL": user.pw_shell,
        "INVOCATION_ID": os.urandom(16).hex(),
    }
    for assignment in unit.values("Environment"):
        for word in shlex.split(assignment):
            key, _, value = word.partition("=")
            env[key] = value
    for spec in unit.values("EnvironmentFile"):
        env.update(read_environment_file(spec))
    state = unit.value("StateDirectory")
    if state:
        env["STATE_DIRECTORY"] = f"/var/lib/{state}"
    return env


def start(unit: Unit) -> int:
    """Like systemd, a parent stays with the service: a detached `run-unit` process that records its exit."""
    for name in (f"{unit.name}.pid", f"{unit.name}.stopped"):
        (state_dir() / name).unlink(missing_ok=True)
    subprocess.Popen(
        [sys.executable, "-m", "tests.walkthrough.fake_systemd", "run-unit", unit.name],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=(state_dir() / f"{unit.name}.manager.log").open("ab"),
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while main_pid(unit) is None:
        if (state_dir() / f"{unit.name}.stopped").exists() or time.monotonic() > deadline:
            print(f"Job for {unit.name}.service failed; see journalctl -u {unit.name}", file=sys.stderr)
            return 1
        time.sleep(0.05)
    print(f"Started {unit.value('Description')} (pid {main_pid(unit)})")
    return 0


def run_unit(unit: Unit) -> int:
    user = pwd.getpwnam(unit.value("User") or "root")
    group = unit.value("Group") or user.pw_name
    gid = grp.getgrnam(group).gr_gid
    state = unit.value("StateDirectory")
    if state:
        directory = Path("/var/lib") / state
        directory.mkdir(parents=True, exist_ok=True)
        os.chown(directory, user.pw_uid, gid)
        directory.chmod(int(unit.value("StateDirectoryMode") or "0755", 8))
    exec_start = unit.value("ExecStart")
    if not exec_start:
        raise UnitError(f"{unit.name}: no ExecStart")

    # `unshare` and then `sandbox` exec in place: the pid started here is the service's MainPID.
    with (state_dir() / f"{unit.name}.journal").open("ab") as journal:
        process = subprocess.Popen(
            [*UNSHARE_MOUNT, sys.executable, "-m", "tests.walkthrough.fake_systemd", "sandbox", unit.name],
            stdin=subprocess.DEVNULL,
            stdout=journal,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (state_dir() / f"{unit.name}.pid").write_text(str(process.pid))
    code = process.wait()
    (state_dir() / f"{unit.name}.stopped").write_text(str(code))
    return 0


def sandbox(unit: Unit) -> int:
    """In the service's own mount namespace, as root: the file system as the hardening keys make it, then
    the unit's user, then exec ExecStart (never returns on success)."""
    user = pwd.getpwnam(unit.value("User") or "root")
    gid = grp.getgrnam(unit.value("Group") or user.pw_name).gr_gid
    env = service_environment(unit, user)
    argv = shlex.split(unit.value("ExecStart") or "")
    writable = [p for value in unit.values("ReadWritePaths") for p in value.split()]
    if unit.value("ProtectSystem") == "strict":
        protect_system_strict(writable)
    if unit.value("PrivateTmp") == "true":
        for tmp in ("/tmp", "/var/tmp"):
            _mount(["-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", tmp])
    if unit.value("NoNewPrivileges") == "true":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise UnitError(f"prctl(PR_SET_NO_NEW_PRIVS) failed: errno {ctypes.get_errno()}")
    os.setgroups([])
    os.setgid(gid)
    os.setuid(user.pw_uid)
    os.chdir(unit.value("WorkingDirectory") or "/")
    os.execve(argv[0], argv, env)


UNSHARE_MOUNT = ("unshare", "--mount", "--propagation", "private")
PR_SET_NO_NEW_PRIVS = 38
API_FILE_SYSTEMS = ("/proc", "/sys", "/dev")


def protect_system_strict(writable: list[str]) -> None:
    """ProtectSystem=strict: every mount read-only but the API file systems and ReadWritePaths=."""
    for path in writable:
        if os.path.exists(path):
            _mount(["--bind", path, path])  # its own mount, so remounting its parent leaves it writable
    keep = set(writable)
    for mount_point in _mount_points():
        if mount_point in keep or any(
            mount_point == api or mount_point.startswith(api + "/") for api in API_FILE_SYSTEMS
        ):
            continue
        _mount(["-o", "remount,bind,ro", mount_point])


def _mount_points() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")  # \040 for a space, as mountinfo writes it
        if point not in points:
            points.append(point)
    return points


def _mount(args: list[str]) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise UnitError(f"mount {' '.join(args)}: {done.stderr.strip()}")


def main_pid(unit: Unit) -> int | None:
    if (state_dir() / f"{unit.name}.stopped").exists():
        return None
    try:
        return int((state_dir() / f"{unit.name}.pid").read_text())
    except (FileNotFoundError, ValueError):
        return None


def reload(unit: Unit) -> int:
    pid = main_pid(unit)
    command = unit.value("ExecReload")
    if pid is None or command is None:
        print(f"{unit.name}: not running or no ExecReload", file=sys.stderr)
        return 1
    return subprocess.run(
        shlex.split(command.replace("$MAINPID", str(pid))), check=False, timeout=30
    ).returncode


def stop(unit: Unit) -> int:
    pid = main_pid(unit)
    if pid is None:
        return 0
    os.kill(pid, signal.Signals[unit.value("KillSignal") or "SIGTERM"])
    timeout_s = float(unit.value("TimeoutStopSec") or "90")
    deadline = time.monotonic() + timeout_s
    stopped = state_dir() / f"{unit.name}.stopped"
    while not stopped.exists():
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            print(f"{unit.name}: did not stop within TimeoutStopSec={timeout_s:g}s, killed", file=sys.stderr)
            return 1
        time.sleep(0.05)
    return 0


def status(unit: Unit) -> int:
    pid = main_pid(unit)
    state = f"active (running), main PID {pid}" if pid else "inactive (dead)"
    print(f"● {unit.name}.service - {unit.value('Description')}\n     Active: {state}")
    return 0 if pid else 3


def systemctl(args: list[str]) -> int:
    words = [a for a in args if not a.startswith("-")]
    now = "--now" in args
    if not words:
        raise UnitError("usage: systemctl COMMAND [UNIT]")
    command, names = words[0], words[1:]
    if command == "daemon-reload":
        return 0  # units are read at each start; the host's own units are not the fake's business
    if not names:
        raise UnitError(f"systemctl {command}: no unit named")
    unit = load(names[0])
    if command == "enable":
        return start(unit) if now and main_pid(unit) is None else 0
    if command in ("start", "restart"):
        if command == "restart":
            stop(unit)
        return start(unit) if main_pid(unit) is None else 0
    if command == "stop":
        return stop(unit)
    if command == "reload":
        return reload(unit)
    if command == "status":
        return status(unit)
    if command == "is-active":
        return 0 if main_pid(unit) else 3
    raise UnitError(f"systemctl {command} is not emulated")


def journalctl(args: list[str]) -> int:
    """`journalctl -u UNIT [-f]`: prints what the unit wrote so far; `-f` does not follow here."""
    if "-u" not in args:
        raise UnitError("usage: journalctl -u UNIT [-f]")
    name = args[args.index("-u") + 1].removesuffix(".service")
    journal = state_dir() / f"{name}.journal"
    sys.stdout.write(journal.read_text(errors="replace") if journal.exists() else "-- No entries --\n")
    return 0


def main(argv: list[str]) -> int:
    tool, args = argv[0], argv[1:]
    try:
        if tool == "run-unit":
            return run_unit(load(args[0]))
        if tool == "sandbox":
            return sandbox(load(args[0]))
        return systemctl(args) if tool == "systemctl" else journalctl(args)
    except UnitError as exc:
        print(f"Failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
