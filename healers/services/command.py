"""A service managed by plain commands from the config: a restart argv, an optional status argv, a pidfile.

    [services.web.manager]
    type = "command"
    restart = ["/usr/local/bin/webctl", "restart"]
    status = ["/usr/local/bin/webctl", "status"]   # optional: exit code 0 means running
    pidfile = "/run/web.pid"                        # optional: the pid of the running process
    timeout_s = 60                                  # optional: limit for each command

Commands are argv lists run without a shell.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

from bot.errors import RestartFailed, ServiceError
from bot.models import ServiceState, ServiceStatus
from healers.services.base import Options, missing_binary, run_command, tail, wait_until_settled

DEFAULT_TIMEOUT_S = 60.0


class CommandManager:
    def __init__(
        self,
        service: str,
        *,
        restart: Sequence[str],
        status: Sequence[str] | None = None,
        pidfile: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if not restart:
            raise ValueError("restart must be a non-empty argv list")
        self.service = service
        self.restart_argv = tuple(restart)
        self.status_argv = tuple(status) if status else None
        self.pidfile = pidfile
        self.timeout_s = timeout_s

    @classmethod
    def from_options(cls, service: str, options: Mapping[str, object], config_path: str) -> CommandManager:
        opts = Options(service, options, config_path)
        restart = opts.argv("restart", required=True)
        assert restart is not None
        manager = cls(
            service,
            restart=restart,
            status=opts.argv("status"),
            pidfile=opts.path("pidfile"),
            timeout_s=opts.number("timeout_s", DEFAULT_TIMEOUT_S),
        )
        opts.finish()
        return manager

    @property
    def label(self) -> str:
        return f"command: {self.service}"

    def status(self) -> ServiceStatus:
        pid = self._live_pid()
        if self.status_argv is not None:
            result = run_command(self.status_argv, timeout_s=self.timeout_s)
            if result.returncode == 0:
                return ServiceStatus(ServiceState.RUNNING, pid=pid, detail="status command exit 0")
            output = tail(result.stderr or result.stdout, 200)
            detail = f"status command exit {result.returncode}" + (f": {output}" if output else "")
            return ServiceStatus(ServiceState.STOPPED, pid=None, detail=detail)
        if self.pidfile is not None:
            if pid is not None:
                return ServiceStatus(
                    ServiceState.RUNNING, pid=pid, detail=f"pid {pid} from {self.pidfile} alive"
                )
            return ServiceStatus(ServiceState.STOPPED, detail=self._pidfile_problem())
        return ServiceStatus(ServiceState.UNKNOWN, detail="no status command or pidfile configured")

    def restart(self, settle_s: float) -> ServiceStatus:
        """Run the restart command; then, when a status command or pidfile exists, wait until running and
        still running (same pid) after `settle_s`. Without either, return UNKNOWN: nothing can be checked."""
        old_pid = self._live_pid()
        try:
            result = run_command(self.restart_argv, timeout_s=self.timeout_s)
        except ServiceError as exc:
            raise RestartFailed(f"{self.label}: restart command failed: {exc}") from exc
        if result.returncode != 0:
            output = tail(result.stderr or result.stdout)
            raise RestartFailed(
                f"{self.label}: restart command exited with code {result.returncode}"
                + (f": {output}" if output else "")
            )
        if self.status_argv is None and self.pidfile is None:
            return ServiceStatus(
                ServiceState.UNKNOWN,
                detail="restart command exited 0; no status command or pidfile configured to check it stayed up",
            )
        return wait_until_settled(
            self.status, label=self.label, settle_s=settle_s, start_timeout_s=self.timeout_s, old_pid=old_pid
        )

    def log_paths(self) -> Sequence[str]:
        return ()

    def check(self) -> str | None:
        problems = [p for p in (_missing_command(self.restart_argv), _missing_command(self.status_argv)) if p]
        if self.pidfile is not None and not Path(self.pidfile).parent.is_dir():
            problems.append(f"the folder of pidfile {self.pidfile} does not exist")
        return "; ".join(problems) if problems else None

    def _live_pid(self) -> int | None:
        if self.pidfile is None:
            return None
        pid = _read_pid(self.pidfile)
        if pid is None:
            return None
        try:
            alive = psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return None
        return pid if alive else None

    def _pidfile_problem(self) -> str:
        assert self.pidfile is not None
        pid = _read_pid(self.pidfile)
        if pid is None:
            return f"no valid pid in {self.pidfile}"
        return f"pid {pid} from {self.pidfile} is not running"


def _read_pid(pidfile: str) -> int | None:
    try:
        text = Path(pidfile).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def _missing_command(argv: Sequence[str] | None) -> str | None:
    if not argv:
        return None
    return missing_binary(argv[0], label="command", hint="use an absolute path")
