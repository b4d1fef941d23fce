"""A real systemd 252, booted as PID 1 of fresh namespaces, once per test session.

    def test_x(systemd: SystemdEnv) -> None:
        systemd.write_unit("web.service", "[Service]\\nExecStart=/bin/sleep 1000\\n")
        systemd.systemctl("start", "web.service")
        manager = SystemdManager("web", unit="web.service", systemctl=systemd.systemctl_bin)

How healbot's real code reaches it: `bin_dir` holds tiny `systemctl`, `journalctl` and `systemd-run`
wrappers that exec `nsenter -t PID -m -p -u -i -n -- systemctl "$@"`. The product needs nothing new:
the manager's `systemctl` and the journald source's `binary` already name the program to run (a path
to systemctl is a real, general option), and `healbot init`/`doctor` find the wrappers first on PATH. So
the code under test is exactly what runs in production, only its child process enters the namespace.
(Running the test's Python inside the namespace instead would hide pytest's files behind the private
/tmp and make every assertion cross the namespace.)

Nothing may reach the host: mount, pid, uts, ipc and net namespaces are new; /etc, /var, /usr, /opt, /srv,
/root and /home are overlays whose upper layer is a tmpfs that only the namespace sees (unit files written under
/etc/systemd/system land there, and systemd-tmpfiles' `D /tmp` cannot empty the host's /tmp); /tmp,
/run and /dev are private tmpfs (with the few device nodes bind-mounted); `shared` is the one host
folder bound in, at the same path, besides the project's own tree when it lies under /tmp (a CI clone). Unit files are written through /proc/PID/root, i.e. into that
overlay. A cgroup namespace rooted at a fresh cgroup of our own in each host hierarchy (remounted
inside) keeps two sessions' systemds, e.g. two test runs at once, out of each other's slices; those
cgroups are removed after the kill.
systemd as PID 1 ignores SIGTERM: `stop()` sends SIGKILL to that one pid, which ends everything in the
namespace; it runs from the fixture's finalizer and from atexit, so also on failures and Ctrl-C.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.helpers import wait_until

SYSTEMD_BINARY = "/lib/systemd/systemd"
BOOT_TIMEOUT_S = 60.0
NSENTER_FLAGS = ("-m", "-p", "-u", "-i", "-n")
UNSHARE = ("unshare", "--cgroup", "--pid", "--fork", "--mount", "--uts", "--ipc", "--net")
# Units of the host image that would only cost time inside (a database, timers, gettys).
MASKED_AT_BOOT = (
    "postgresql.service",
    "postgresql@.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "man-db.timer",
    "systemd-timesyncd.service",
    "getty.target",
    "console-getty.service",
)

BOOT_SCRIPT = r"""
set -eu
base=$1
layers=/run/healbot-test-layers
mount --make-rprivate /
mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup
while read -r fstype options target; do  # remounted in the cgroup namespace: rooted at our own cgroup
  mkdir -p "$target"
  if [ "$fstype" = cgroup2 ]; then mount -t cgroup2 cgroup2 "$target"
  else mount -t cgroup -o "$options" cgroup "$target"; fi
done < "$base/cgroups"
mount -t tmpfs -o mode=755 tmpfs /run
mkdir "$layers"
mount -t tmpfs -o mode=700 tmpfs "$layers"
for d in etc var root home usr opt srv; do
  mkdir -p "$layers/$d/upper" "$layers/$d/work"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$layers/$d/upper,workdir=$layers/$d/work" "/$d"
done
mkdir "$layers/dev" "$layers/shared"
mount -t tmpfs -o mode=755 tmpfs "$layers/dev"
for n in null zero full random urandom tty; do
  touch "$layers/dev/$n"; mount --bind "/dev/$n" "$layers/dev/$n"
done
mkdir "$layers/dev/pts" "$layers/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$layers/dev/pts"
ln -s pts/ptmx "$layers/dev/ptmx"
ln -s /proc/self/fd "$layers/dev/fd"
mount -t tmpfs tmpfs "$layers/dev/shm"
mount --move "$layers/dev" /dev
mount --bind "$base/shared" "$layers/shared"
checkout=$(cat "$base/checkout")
case "$checkout" in /tmp/*)  # a checkout under /tmp (a CI clone) stays visible behind the private /tmp
  mkdir "$layers/checkout"; mount --bind "$checkout" "$layers/checkout";;
esac
mount -t proc proc /proc
mount -t tmpfs -o mode=1777 tmpfs /tmp
mkdir -p "$base/shared"
mount --move "$layers/shared" "$base/shared"
if [ -d "$layers/checkout" ]; then mkdir -p "$checkout"; mount --move "$layers/checkout" "$checkout"; fi
shift
for unit in "$@"; do ln -sf /dev/null "/etc/systemd/system/$unit"; done
exec /lib/systemd/systemd --system
"""


CHECKOUT = Path(__file__).resolve().parents[2]  # the project's tree: tests read deploy/, .venv, .cache


def sudo_package() -> Path | None:
    """Debian's sudo as `make tools` unpacks it (HEALBOT_SUDO_DIR), or None before that ran."""
    configured = os.environ.get("HEALBOT_SUDO_DIR")
    candidates = [Path(configured)] if configured else sorted(CHECKOUT.glob(".cache/sudo-*"))
    found = [path for path in candidates if (path / "usr/bin/sudo").is_file()]
    return found[-1] if found else None


def cannot_boot_reason() -> str | None:
    """The one reason a session cannot boot systemd here, or None when it must boot."""
    if os.geteuid() != 0:
        return "booting systemd in namespaces needs root"
    if not os.access(SYSTEMD_BINARY, os.X_OK):
        return f"{SYSTEMD_BINARY} is not installed"
    missing = [tool for tool in ("unshare", "nsenter", "systemctl") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not on PATH"
    return None


@dataclass
class SystemdEnv:
    pid: int  # systemd's pid as the host sees it
    base: Path
    process: subprocess.Popen[bytes]
    boot_log: Path
    state: str = ""
    cgroups: tuple[Path, ...] = ()  # our own cgroup in each host hierarchy: the namespace's root

    @property
    def shared(self) -> Path:
        """A host folder visible inside at the same path (service scripts' flag files, sockets, ...)."""
        return self.base / "shared"

    @property
    def bin_dir(self) -> Path:
        return self.base / "bin"

    @property
    def systemctl_bin(self) -> str:
        return str(self.bin_dir / "systemctl")

    @property
    def journalctl_bin(self) -> str:
        return str(self.bin_dir / "journalctl")

    @property
    def root(self) -> Path:
        """The namespace's file system, as seen from the host."""
        return Path(f"/proc/{self.pid}/root")

    def argv(self, *argv: str) -> list[str]:
        return ["nsenter", "-t", str(self.pid), *NSENTER_FLAGS, "--", *argv]

    def run(
        self, *argv: str, check: bool = True, timeout: float = 30.0, input: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.argv(*argv),
            input=input.decode() if input is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} failed (exit {result.returncode}): {result.stderr or result.stdout}"
            )
        return result

    def systemctl(self, *args: str, check: bool = True, timeout: float = 30.0) -> str:
        return self.run("systemctl", *args, check=check, timeout=timeout).stdout

    def journalctl(self, *args: str, check: bool = True) -> str:
        return self.run("journalctl", "--no-pager", *args, check=check).stdout

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        out = self.systemctl("show", unit, f"--property={','.join(properties)}")
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def write_unit(self, name: str, text: str, *, reload: bool = True) -> None:
        """Write /etc/systemd/system/NAME inside (the overlay's tmpfs layer) and daemon-reload."""
        (self.root / "etc/systemd/system" / name).write_text(text)
        if reload:
            self.systemctl("daemon-reload")

    def remove_unit(self, name: str) -> None:
        self.systemctl("stop", name, check=False)
        self.systemctl("reset-failed", name, check=False)
        with contextlib.suppress(FileNotFoundError):
            (self.root / "etc/systemd/system" / name).unlink()
        self.systemctl("daemon-reload")

    @contextlib.contextmanager
    def unit(self, name: str, text: str, *, start: bool = True) -> Iterator[str]:
        self.write_unit(name, text)
        try:
            if start:
                self.systemctl("start", name)
            yield name
        finally:
            self.remove_unit(name)

    def install_sudo(self, package: Path) -> None:
        """Debian's sudo, unpacked by `make tools` (SUDO_DIR), into the namespace's /usr and /etc overlays
        with the owners and modes its package gives them; the host keeps no sudo."""
        if (self.root / "usr/bin/sudo").exists():
            return
        # copied from the host's side through /proc/PID/root: inside, the private /tmp hides a checkout there
        for tree, flags in (("usr", ()), ("etc", ("--no-clobber",))):
            subprocess.run(["cp", "-a", *flags, f"{package}/{tree}/.", f"{self.root / tree}/"], check=True)
        self.run("chown", "-R", "root:root", "/usr/bin/sudo", "/etc/sudoers", "/etc/sudoers.d")
        self.run("chmod", "4755", "/usr/bin/sudo")
        self.run("chmod", "0440", "/etc/sudoers")
        self.run("chmod", "0750", "/etc/sudoers.d")

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()  # the unshare parent, which we started too
                self.process.wait(timeout=5)
        remove_cgroups(self.cgroups)
        shutil.rmtree(self.base, ignore_errors=True)

    @classmethod
    def boot(cls, masked: tuple[str, ...] = MASKED_AT_BOOT) -> SystemdEnv:
        base = Path(tempfile.mkdtemp(prefix="hb-systemd-"))
        for sub in ("shared", "bin"):
            (base / sub).mkdir()
        script = base / "boot.sh"
        script.write_text(BOOT_SCRIPT)
        boot_log = base / "boot.log"
        hierarchies = _cgroup_hierarchies()
        (base / "cgroups").write_text("".join(f"{t} {o or '-'} {p}\n" for t, o, p in hierarchies))
        (base / "checkout").write_text(str(CHECKOUT))
        cgroups = tuple(Path(p) / base.name for _, _, p in hierarchies)
        for cgroup in cgroups:
            cgroup.mkdir()
            for inherited in ("cpuset.cpus", "cpuset.mems"):  # an empty cpuset takes no tasks
                if (cgroup / inherited).exists():
                    (cgroup / inherited).write_text((cgroup.parent / inherited).read_text())
        enter = "".join(f'echo $$ > "{cgroup}/cgroup.procs"; ' for cgroup in cgroups)
        with open(boot_log, "wb") as log:
            process = subprocess.Popen(
                [
                    "sh",
                    "-c",
                    f'{enter}exec "$@"',
                    "enter-cgroup",
                    *UNSHARE,
                    "sh",
                    str(script),
                    str(base),
                    *masked,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        env = cls(0, base, process, boot_log, cgroups=cgroups)
        try:
            env.pid = wait_until(lambda: _systemd_child(process), timeout=BOOT_TIMEOUT_S, what="systemd exec")
            env._write_wrappers()
            env.state = wait_until(env._booted, timeout=BOOT_TIMEOUT_S, what="systemd running/degraded")
        except BaseException:
            log_text = boot_log.read_text(errors="replace")[-2000:]
            env.stop()
            if process.returncode not in (None, 0, -signal.SIGKILL):
                raise AssertionError(
                    f"systemd did not boot (exit {process.returncode}): {log_text}"
                ) from None
            raise
        return env

    def failed_units(self) -> list[str]:
        out = self.systemctl("list-units", "--state=failed", "--no-legend", "--plain", check=False)
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def _booted(self) -> str | None:
        if self.process.poll() is not None:
            raise AssertionError(f"systemd exited during boot: {self.boot_log.read_text(errors='replace')}")
        state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
        return state if state in ("running", "degraded") else None

    def _write_wrappers(self) -> None:
        for name in ("systemctl", "journalctl", "systemd-run"):
            wrapper = self.bin_dir / name
            flags = " ".join(NSENTER_FLAGS)
            wrapper.write_text(f'#!/bin/sh\nexec nsenter -t {self.pid} {flags} -- {name} "$@"\n')
            wrapper.chmod(0o755)

    def path_env(self, base_env: Mapping[str, str] | None = None) -> dict[str, str]:
        """An environment whose PATH finds the wrappers first (for `healbot init`/`doctor` runs)."""
        env = dict(base_env if base_env is not None else os.environ)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env


def _systemd_child(process: subprocess.Popen[bytes]) -> int | None:
    if process.poll() is not None:
        raise AssertionError(f"unshare exited with {process.returncode} before systemd started")
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(process.pid).children():
            if child.cmdline()[:1] == [SYSTEMD_BINARY]:
                return child.pid
    return None


def _cgroup_hierarchies() -> list[tuple[str, str, str]]:
    """(fstype, options, mount point) of each cgroup hierarchy mounted on the host."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        target, fstype, super_options = fields[4], fields[sep + 1], fields[sep + 3]
        if fstype in ("cgroup", "cgroup2"):
            options = ",".join(o for o in super_options.split(",") if o not in ("rw", "ro"))
            found.append((fstype, options, target))
    return found


def remove_cgroups(roots: tuple[Path, ...]) -> None:
    """rmdir our cgroups (systemd's or docker's own inside them first), once the killed tasks have left."""
    deadline = time.monotonic() + 10
    while True:
        left = [dirpath for root in roots if root.is_dir() for dirpath, _, _ in os.walk(root)]
        for path in sorted(left, key=len, reverse=True):
            with contextlib.suppress(OSError):
                os.rmdir(path)  # EBUSY while a killed task is still leaving
        if not left or time.monotonic() > deadline:
            return
        time.sleep(0.05)


_booted_env: list[SystemdEnv] = []


@atexit.register
def _kill_at_exit() -> None:
    while _booted_env:
        _booted_env.pop().stop()


@pytest.fixture(scope="session")
def systemd() -> Iterator[SystemdEnv]:
    reason = cannot_boot_reason()
    if reason is not None:
        pytest.skip(f"no real systemd here: {reason}")
    env = SystemdEnv.boot()  # root with systemd present: a failed boot fails the tests, never skips
    _booted_env.append(env)
    try:
        yield env
    finally:
        with contextlib.suppress(ValueError):
            _booted_env.remove(env)
        env.stop()
