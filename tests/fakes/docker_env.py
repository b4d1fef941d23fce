"""A real Docker engine (Debian's docker.io 20.10.24, unpacked by `make tools`), once per test session.

    def test_x(docker: DockerEnv) -> None:
        docker.run_container("web", "print('up', flush=True); import time; time.sleep(1000)")
        manager = DockerManager("web", container="web", binary=docker.docker_bin)

The engine is not installed: `make tools` runs `apt-get download` of the pinned docker.io, containerd,
runc and tini and `dpkg -x` unpacks them into .cache/docker-20.10.24, from where they run as they are
(dockerd finds containerd, runc and docker-init on its PATH). `docker_bin` is a tiny wrapper around the
pinned client that names this daemon's socket (`-H`), so healbot's code under test is unchanged: the
manager's and the log source's `binary` option already name the docker program.

Nothing reaches the host: dockerd runs in its own mount namespace (`unshare --mount`, everything made
private), so the overlay and nsfs mounts of its containers live and die with it; a tmpfs over /run
inside takes containerd's shim sockets (/run/containerd/s) and /run/docker; `--config-file` points at
our own daemon.json (whose `deprecated-key-path` keeps the key off /etc/docker); socket, data root,
exec root and pid file are under one temp folder; `--cgroup-parent` puts the containers' cgroups under
one of our own, removed at the end. No network: no bridge, no iptables, containers get `--network none`.

No registry is reachable, so the one image is `docker import` of a root file system with only empty
folders and the usr-merge symlinks; containers bind the host's /usr read-only, and run its python3.
They run with `--init` (docker-init is tini): python as PID 1 would ignore SIGTERM and make every
`docker restart` wait the 10 s stop timeout.

`stop()` sends SIGTERM to dockerd (it stops its containers, `--shutdown-timeout` 2 s), SIGKILL after
30 s, then ends by pid any containerd shim of this daemon still alive, unmounts whatever is mounted
under the temp folder in our own namespace (nothing, unless the namespace leaked), removes the cgroups
and the folder. It runs from the fixture's finalizer and from atexit; and should pytest itself be killed,
dockerd gets SIGTERM as its parent-death signal (`setpriv --pdeathsig`), so its containers stop too.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from tests.fakes.systemd_env import remove_cgroups
from tests.helpers import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DOCKER_DIR = REPO_ROOT / ".cache/docker-20.10.24"
IMAGE = "healbot-test:1"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
HOST_PYTHON = "/usr/bin/python3"

START_SCRIPT = r"""
set -eu
mount --make-rprivate /
mount -t tmpfs -o mode=755 tmpfs /run
exec "$@"
"""


def docker_dir() -> Path:
    return Path(os.environ.get("HEALBOT_DOCKER_DIR") or DEFAULT_DOCKER_DIR)


def cannot_start_reason() -> str | None:
    """The one reason a session cannot start dockerd here, or None when it must start."""
    if os.geteuid() != 0:
        return "dockerd needs root (rootless docker needs more than this machine kind has)"
    dockerd = docker_dir() / "usr/sbin/dockerd"
    if not os.access(dockerd, os.X_OK):
        return f"{dockerd} is missing: run `make tools`"
    missing = [tool for tool in ("unshare", "setpriv") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not on PATH"
    if not os.access(HOST_PYTHON, os.X_OK):
        return f"{HOST_PYTHON} (the containers' interpreter) is missing"
    return None


@dataclass
class DockerEnv:
    base: Path
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)
    cgroups: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        self.log_path = self.base / "dockerd.log"

    @property
    def name(self) -> str:
        return self.base.name

    @property
    def socket(self) -> Path:
        return self.base / "docker.sock"

    @property
    def data_root(self) -> Path:
        return self.base / "data"

    @property
    def exec_root(self) -> Path:
        return self.base / "exec"

    @property
    def docker_bin(self) -> str:
        """The client wrapper healbot is configured with (`binary = ...`)."""
        return str(self.base / "bin/docker")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    # --- driving it -----------------------------------------------------------------------------

    def docker(
        self, *args: str, check: bool = True, timeout: float = 60.0, input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(
            [self.docker_bin, *args], input=input, capture_output=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} failed (exit {result.returncode}): "
                f"{result.stderr.decode(errors='replace')}"
            )
        return result

    def run_container(
        self,
        name: str,
        script: str,
        *,
        restart: str = "no",
        tty: bool = False,
        env: Sequence[str] = (),
        binds: Sequence[str] = (),
        memory: str | None = None,
        log_opts: Sequence[str] = (),
        health_cmd: str | None = None,
        log_driver: str | None = None,
    ) -> str:
        """Start `python3 -c SCRIPT` in a container NAME (removed first if it exists); its id."""
        self.remove(name)
        argv = ["run", "-d", "--name", name, "--init", "--network", "none", "--restart", restart]
        argv += ["-v", "/usr:/usr:ro", "-e", "PYTHONUNBUFFERED=1"]
        argv += [*(["-t"] if tty else []), *(f"-e={item}" for item in env)]
        argv += [arg for bind in binds for arg in ("-v", bind)]
        argv += ["--memory", memory, "--memory-swap", memory] if memory else []
        argv += [f"--log-opt={opt}" for opt in log_opts]
        argv += [f"--log-driver={log_driver}"] if log_driver else []
        if health_cmd:
            argv += ["--health-cmd", health_cmd, "--health-interval=200ms", "--health-start-period=30s"]
        out = self.docker(*argv, IMAGE, HOST_PYTHON, "-c", script)
        return out.stdout.decode().strip()

    def remove(self, name: str) -> None:
        self.docker("rm", "-f", name, check=False)

    def inspect(self, name: str) -> dict[str, object]:
        data = json.loads(self.docker("inspect", "--type", "container", name).stdout)
        assert isinstance(data, list) and len(data) == 1
        container: dict[str, object] = data[0]
        return container

    def state(self, name: str) -> dict[str, object]:
        state = self.inspect(name)["State"]
        assert isinstance(state, dict)
        return state

    def logs(self, name: str) -> str:
        out = self.docker("logs", name)
        return (out.stdout + out.stderr).decode(errors="replace")

    # --- lifecycle ------------------------------------------------------------------------------

    @classmethod
    def start(cls) -> DockerEnv:
        base = Path(tempfile.mkdtemp(prefix="hb-docker-"))
        env = cls(base)
        try:
            env._prepare()
            env.start_daemon()
            env._import_image()
        except BaseException:
            env.stop()
            raise
        return env

    def start_daemon(self) -> None:
        """Start dockerd on this folder (again, after `stop_daemon`: the same data root and containers)."""
        tools = docker_dir()
        path = f"{tools / 'usr/bin'}{os.pathsep}{tools / 'usr/sbin'}{os.pathsep}{os.environ.get('PATH', '')}"
        argv = [
            "unshare",
            "--mount",
            "sh",
            str(self.base / "start.sh"),
            *("setpriv", "--pdeathsig", "TERM"),  # pytest killed (-9): dockerd still stops its containers
            str(tools / "usr/sbin/dockerd"),
            f"--host=unix://{self.socket}",
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--pidfile={self.base / 'docker.pid'}",
            f"--config-file={self.base / 'daemon.json'}",
            f"--cgroup-parent=/{self.name}",
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--ip-forward=false",
            "--ip-masq=false",
            "--userland-proxy=false",
            "--shutdown-timeout=2",
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PATH": path},
            )
        wait_until(self._answers, timeout=START_TIMEOUT_S, interval=0.1, what="dockerd to answer")

    def stop_daemon(self) -> None:
        """SIGTERM dockerd (it stops its containers first), SIGKILL if it has not exited in time."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        self._kill_leftover_shims()

    def stop(self) -> None:
        self.stop_daemon()
        self._kill_leftover_shims()
        self._unmount_leftovers()
        remove_cgroups(self.cgroups)
        shutil.rmtree(self.base, ignore_errors=True)

    def _prepare(self) -> None:
        (self.base / "start.sh").write_text(START_SCRIPT)
        (self.base / "daemon.json").write_text(
            json.dumps({"deprecated-key-path": str(self.base / "key.json")})
        )
        (self.base / "bin").mkdir()
        (self.base / "client").mkdir()
        wrapper = Path(self.docker_bin)
        client = docker_dir() / "usr/bin/docker"
        wrapper.write_text(
            f'#!/bin/sh\nDOCKER_CONFIG={self.base / "client"} exec {client} -H unix://{self.socket} "$@"\n'
        )
        wrapper.chmod(0o755)
        self.cgroups = tuple(Path(mount) / self.name for mount in _cgroup_mounts())

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            log = self.log_path.read_text(errors="replace")[-3000:]
            raise AssertionError(f"dockerd exited with {self.process.returncode} while starting: {log}")
        return self.docker("version", "--format", "{{.Server.Version}}", check=False).returncode == 0

    def _import_image(self) -> None:
        self.docker("import", "-", IMAGE, input=_minimal_rootfs_tar())

    def _kill_leftover_shims(self) -> None:
        """A containerd shim outlives a SIGKILLed dockerd; ours name our exec root in their argv."""
        marker = str(self.exec_root)
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = proc.info["cmdline"] or []
            if any(marker in arg for arg in cmdline):
                with contextlib.suppress(psutil.Error):
                    proc.kill()
                    proc.wait(timeout=5)

    def _unmount_leftovers(self) -> None:
        prefix = f"{self.base}/"
        targets = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            target = line.split()[4]
            if target.startswith(prefix):
                targets.append(target)
        for target in sorted(targets, key=len, reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)


def _minimal_rootfs_tar() -> bytes:
    """Empty folders plus the usr-merge symlinks (but a real /sbin, where dockerd binds docker-init);
    /usr is bound from the host at run time."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for folder, mode in (("usr", 0o755), ("etc", 0o755), ("tmp", 0o1777), ("proc", 0o555)):
            info = tarfile.TarInfo(folder)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, int(time.time())
            tar.addfile(info)
        for folder in ("sys", "dev", "run", "var", "sbin"):  # sbin: where dockerd binds docker-init
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for link, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buffer.getvalue()


def _cgroup_mounts() -> list[str]:
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[fields.index("-") + 1] in ("cgroup", "cgroup2"):
            mounts.append(fields[4])
    return mounts


_started: list[DockerEnv] = []


@atexit.register
def _stop_at_exit() -> None:
    while _started:
        _started.pop().stop()


@pytest.fixture(scope="session")
def docker() -> Iterator[DockerEnv]:
    reason = cannot_start_reason()
    if reason is not None:
        pytest.skip(f"no real docker here: {reason}")
    env = DockerEnv.start()  # root with the engine unpacked: a failed start fails the tests, never skips
    _started.append(env)
    try:
        yield env
    finally:
        with contextlib.suppress(ValueError):
            _started.remove(env)
        env.stop()
