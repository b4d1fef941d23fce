"""A Docker container, driven by `docker inspect` (status) and `docker restart`.

    [services.web.manager]
    type = "docker"
    container = "web"   # required: name or id
    binary = "docker"   # optional: path to the docker CLI
    timeout_s = 60      # optional: limit for each docker call and for the container to come up

`docker inspect` also prints the container's environment (Config.Env): only named fields are read, and
no message quotes its output. A container whose app ignores SIGTERM takes 10 s to restart (docker waits,
then kills); the fix is in the container (handle SIGTERM, or `--init`), not here.

An exited container is FATAL only when its app failed: one ended by `docker stop`/`kill` (exit code 128 +
SIGTERM, SIGKILL or SIGINT, and not the kernel's OOM kill) is STOPPED, which healbot may restart.
Measured against dockerd 20.10 in tests/test_docker_real.py.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.errors import RestartFailed, ServiceError
from bot.models import ServiceState, ServiceStatus
from healers.services.base import (
    CommandRunner,
    Options,
    missing_binary,
    subprocess_runner,
    tail,
    wait_until_settled,
)

DEFAULT_TIMEOUT_S = 60.0
# `docker stop` ends a container with SIGTERM, then SIGKILL after its stop timeout; `docker kill` with
# SIGKILL; Ctrl-C of an attached run with SIGINT. Its exit code is then 128 + the signal's number.
_STOP_SIGNALS = {128 + s: s.name for s in (signal.SIGTERM, signal.SIGKILL, signal.SIGINT)}


@dataclass(frozen=True, slots=True)
class ContainerState:
    """The fields read from one `docker inspect` object; nothing else (it holds the environment)."""

    status: str
    running: bool
    restarting: bool
    pid: int | None
    exit_code: int | None
    error: str
    restart_count: int
    health: str | None
    failing_streak: int
    log_path: str
    oom_killed: bool = False

    @property
    def stop_signal(self) -> str | None:
        """The signal that stopped an exited container (`docker stop`/`kill`), not the kernel's OOM kill."""
        if self.status != "exited" or self.oom_killed or self.exit_code is None:
            return None
        return _STOP_SIGNALS.get(self.exit_code)

    def to_status(self) -> ServiceStatus:
        if self.restarting or self.status == "restarting":
            state = ServiceState.CRASH_LOOP
        elif self.status == "paused":  # `Running` stays true, but a frozen app serves nothing
            state = ServiceState.STOPPED
        elif self.running and self.health == "starting":
            state = ServiceState.STARTING
        elif self.running:
            state = ServiceState.RUNNING
        elif self.status == "exited" and self.exit_code not in (None, 0) and self.stop_signal is None:
            state = ServiceState.FATAL
        elif self.status in ("created", "exited", "paused", "removing", "dead"):
            state = ServiceState.STOPPED
        else:
            state = ServiceState.UNKNOWN
        detail = self.status or "unknown"
        if self.stop_signal is not None:
            detail += f", stopped by {self.stop_signal} (exit code {self.exit_code})"
        elif self.exit_code and (self.restarting or not self.running):
            detail += f", last exit code {self.exit_code}"
        if self.oom_killed:
            detail += ", killed: out of memory"
        if self.error:
            detail += f" ({self.error})"
        if self.health:
            detail += f", health {self.health}"
            if self.failing_streak:
                detail += f" ({self.failing_streak} failing checks in a row)"
        if self.restart_count:
            detail += f", restarted {self.restart_count} times by docker"
        pid = self.pid if state in (ServiceState.RUNNING, ServiceState.STARTING) else None
        return ServiceStatus(state, pid=pid, restarts=self.restart_count, detail=detail)


class DockerManager:
    def __init__(
        self,
        service: str,
        *,
        container: str,
        binary: str = "docker",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        runner: CommandRunner | None = None,
    ) -> None:
        self.service = service
        self.container = container
        self.binary = binary
        self.timeout_s = timeout_s
        self.run = runner or subprocess_runner(timeout_s)

    @classmethod
    def from_options(cls, service: str, options: Mapping[str, object], config_path: str) -> DockerManager:
        opts = Options(service, options, config_path)
        container = opts.required_string("container")
        if container.startswith("-"):
            raise opts.error("container", f"must be a container name or id, not {container!r}")
        manager = cls(
            service,
            container=container,
            binary=opts.string("binary", "docker") or "docker",
            timeout_s=opts.number("timeout_s", DEFAULT_TIMEOUT_S),
        )
        opts.finish()
        return manager

    @property
    def label(self) -> str:
        return f"docker: {self.container}"

    def inspect_argv(self) -> list[str]:
        return [self.binary, "inspect", "--type", "container", self.container]

    def restart_argv(self) -> list[str]:
        return [self.binary, "restart", self.container]

    def inspect(self) -> ContainerState:
        rc, stdout, stderr = self.run(self.inspect_argv())
        if rc != 0:
            raise ServiceError(f"{self.label}: `docker inspect` failed (exit {rc}): {tail(stderr, 300)}")
        return parse_inspect(stdout)

    def status(self) -> ServiceStatus:
        return self.inspect().to_status()

    def restart(self, settle_s: float) -> ServiceStatus:
        try:
            before = self.status()
            rc, _stdout, stderr = self.run(self.restart_argv())
        except ServiceError as exc:
            raise RestartFailed(f"cannot restart: {exc}") from exc
        if rc != 0:
            raise RestartFailed(f"{self.label}: `docker restart` failed (exit {rc}): {tail(stderr, 300)}")
        old_pid = before.pid if before.state is ServiceState.RUNNING else None
        return wait_until_settled(
            self.status, label=self.label, settle_s=settle_s, start_timeout_s=self.timeout_s, old_pid=old_pid
        )

    def log_paths(self) -> Sequence[str]:
        path = self.inspect().log_path
        return (path,) if path else ()

    def check(self) -> str | None:
        missing = missing_binary(
            self.binary, label="docker binary", hint="install the docker CLI or set binary"
        )
        if missing is not None:
            return missing
        try:
            status = self.inspect().to_status()
        except ServiceError as exc:
            text = str(exc)
            if "Cannot connect to the Docker daemon" in text:
                return f"{text}: start dockerd, or check that healbot's user may use its socket"
            if "No such container" in text or "No such object" in text:
                return f"{text}: check the name with `docker ps -a`"
            return text
        if status.state is ServiceState.FATAL:
            return (
                f"{self.label}: container has failed: {status.detail}; see `docker logs {self.container}`, "
                f"fix the cause, then `docker start {self.container}`"
            )
        if status.state is ServiceState.CRASH_LOOP:
            return f"{self.label}: docker keeps restarting the container: {status.detail}; see `docker logs {self.container}`"
        return None


def parse_inspect(stdout: str) -> ContainerState:
    try:
        data = json.loads(stdout)
    except ValueError:
        raise ServiceError("`docker inspect` did not print JSON") from None  # never quote it: it holds Env
    if not isinstance(data, list) or len(data) != 1 or not isinstance(data[0], dict):
        raise ServiceError("`docker inspect` did not print exactly one container")
    container: dict[str, Any] = data[0]
    state = container.get("State")
    state = state if isinstance(state, dict) else {}
    health = state.get("Health")
    health = health if isinstance(health, dict) else {}
    return ContainerState(
        status=str(state.get("Status", "")),
        running=state.get("Running") is True,
        restarting=state.get("Restarting") is True,
        pid=_int(state.get("Pid")) or None,
        exit_code=_int(state.get("ExitCode")),
        error=str(state.get("Error") or ""),
        restart_count=_int(container.get("RestartCount")) or 0,
        health=str(health["Status"]) if health.get("Status") else None,
        failing_streak=_int(health.get("FailingStreak")) or 0,
        log_path=str(container.get("LogPath") or ""),
        oom_killed=state.get("OOMKilled") is True,
    )


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
