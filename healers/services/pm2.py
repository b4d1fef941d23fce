"""An app under PM2, driven by the `pm2` CLI (`jlist` for status, `restart` to restart).

    [services.web.manager]
    type = "pm2"
    app = "web"                  # optional, default: the service name
    pm2_home = "/srv/web/.pm2"   # optional: PM2_HOME for every call (default: ~/.pm2)
    binary = "pm2"               # optional: path to the pm2 CLI
    timeout_s = 30               # optional: limit for each pm2 call and for the app to come online

Three PM2 facts shape this module:
- Any pm2 call spawns a daemon when none runs, so nothing here calls pm2 unless `$PM2_HOME/pm2.pid`
  names a live daemon, and the calls get a minimal environment (a spawned daemon must not inherit the
  bot's secrets).
- `pm2 jlist` holds each app's whole environment. Only named fields are read from it; no message, log
  line or return value carries its text.
- A crash loop that starts long after `pm2 start` keeps `status: online`; only the restart counter and
  the pid moving between two polls show it, which the settle check watches.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bot.errors import RestartFailed, ServiceError
from bot.models import ServiceState, ServiceStatus
from healers.services.base import (
    CommandResult,
    Options,
    missing_binary,
    run_command,
    tail,
    wait_until_settled,
)

DEFAULT_TIMEOUT_S = 30.0
_PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")

_STATES = {
    "online": ServiceState.RUNNING,
    "launching": ServiceState.STARTING,
    "waiting restart": ServiceState.CRASH_LOOP,
    "stopping": ServiceState.STOPPED,
    "stopped": ServiceState.STOPPED,
    "one-launch-status": ServiceState.STOPPED,
    "errored": ServiceState.FATAL,  # PM2 gave up after too many unstable restarts
}
# When instances of one app disagree, the worst state wins.
_SEVERITY = (
    ServiceState.FATAL,
    ServiceState.CRASH_LOOP,
    ServiceState.STOPPED,
    ServiceState.UNKNOWN,
    ServiceState.STARTING,
    ServiceState.RUNNING,
)


@dataclass(frozen=True, slots=True)
class Pm2Process:
    """The fields read from one `pm2 jlist` entry; nothing else (the rest holds the app's environment)."""

    name: str
    pm_id: int
    pid: int | None
    status: str
    restart_time: int
    unstable_restarts: int
    exit_code: int | None
    out_log: str
    err_log: str

    @property
    def state(self) -> ServiceState:
        return _STATES.get(self.status, ServiceState.UNKNOWN)

    def describe(self) -> str:
        words = f"{self.status} (restarts {self.restart_time}, unstable restarts {self.unstable_restarts}"
        if self.exit_code is not None and self.state is not ServiceState.RUNNING:
            words += f", last exit code {self.exit_code}"
        return words + ")"


class Pm2Manager:
    def __init__(
        self,
        service: str,
        *,
        app: str | None = None,
        pm2_home: str | None = None,
        binary: str = "pm2",
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.service = service
        self.app = app or service
        self.pm2_home = pm2_home
        self.binary = binary
        self.timeout_s = timeout_s

    @classmethod
    def from_options(cls, service: str, options: Mapping[str, object], config_path: str) -> Pm2Manager:
        opts = Options(service, options, config_path)
        manager = cls(
            service,
            app=opts.string("app"),
            pm2_home=opts.path("pm2_home"),
            binary=opts.string("binary", "pm2") or "pm2",
            timeout_s=opts.number("timeout_s", DEFAULT_TIMEOUT_S),
        )
        opts.finish()
        return manager

    @property
    def label(self) -> str:
        return f"pm2: {self.app}"

    @property
    def home(self) -> str:
        return self.pm2_home or os.path.join(os.path.expanduser("~"), ".pm2")

    def status(self) -> ServiceStatus:
        processes = self._processes()
        state = min((p.state for p in processes), key=_SEVERITY.index)
        first = processes[0]
        if len(processes) == 1:
            detail = first.describe()
        else:
            detail = "; ".join(f"instance {p.pm_id}: {p.describe()}" for p in processes)
        return ServiceStatus(
            state,
            pid=first.pid,
            restarts=sum(p.restart_time for p in processes),
            detail=detail,
        )

    def restart(self, settle_s: float) -> ServiceStatus:
        try:
            old_pid = self._processes()[0].pid
        except ServiceError as exc:
            raise RestartFailed(f"{self.label}: cannot restart: {exc}") from exc
        result = self._run("restart", self.app)
        if result.returncode != 0:
            raise RestartFailed(
                f"{self.label}: `pm2 restart` exited with code {result.returncode}: "
                f"{tail(result.stderr or result.stdout)}"
            )
        return wait_until_settled(
            self.status, label=self.label, settle_s=settle_s, start_timeout_s=self.timeout_s, old_pid=old_pid
        )

    def log_paths(self) -> Sequence[str]:
        paths: list[str] = []
        for process in self._processes():
            for path in (process.out_log, process.err_log):
                if path and path not in paths and not path.startswith("/dev/"):
                    paths.append(path)
        return tuple(paths)

    def check(self) -> str | None:
        missing = missing_binary(
            self.binary,
            label="pm2 binary",
            hint='install PM2 or set binary = "/path/to/pm2"',
            search_path=self._env().get("PATH"),
        )
        if missing is not None:
            return missing
        try:
            self._processes()
        except ServiceError as exc:
            return str(exc)
        return None

    # --- pm2 calls ---------------------------------------------------------------------------------

    def _processes(self) -> list[Pm2Process]:
        self._require_daemon()
        result = self._run("jlist")
        if result.returncode != 0:
            raise ServiceError(
                f"`pm2 jlist` exited with code {result.returncode}: {tail(result.stderr, 300)}"
            )
        entries = _parse_jlist(result.stdout)
        processes = [p for p in entries if p.name == self.app]
        if not processes:
            known = sorted({p.name for p in entries})
            raise ServiceError(
                f"PM2 (PM2_HOME={self.home}) has no app {self.app!r}; known: {', '.join(known) or 'none'}"
            )
        return processes

    def _require_daemon(self) -> None:
        pidfile = Path(self.home) / "pm2.pid"
        hint = f"start it with `PM2_HOME={self.home} pm2 resurrect` (or `pm2 start` your app)"
        try:
            pid = int(pidfile.read_text(encoding="utf-8").strip())
            alive = psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except (OSError, ValueError, psutil.Error):
            alive = False
        if not alive:
            raise ServiceError(f"the PM2 daemon for PM2_HOME={self.home} is not running; {hint}")

    def _run(self, *args: str) -> CommandResult:
        try:
            return run_command([self.binary, *args], timeout_s=self.timeout_s, env=self._env())
        except ServiceError as exc:
            raise ServiceError(f"pm2 {args[0]}: {exc}") from None

    def _env(self) -> dict[str, str]:
        env = {key: os.environ[key] for key in _PASSED_ENV if key in os.environ}
        env["PM2_HOME"] = self.home
        return env


def _parse_jlist(stdout: str) -> list[Pm2Process]:
    """Parse `pm2 jlist`, tolerating warning lines PM2 sometimes prints before the JSON."""
    data: object = None
    text = stdout.strip()
    candidates = [text] + [text[i:] for i in range(1, len(text)) if text[i] == "[" and text[i - 1] == "\n"]
    for candidate in candidates:
        try:
            data = json.loads(candidate)
            break
        except ValueError:
            continue
    if not isinstance(data, list):
        # Never quote the output: it holds every app's environment.
        raise ServiceError("`pm2 jlist` did not print a JSON list")
    return [_process(entry) for entry in data if isinstance(entry, dict)]


_LIVE_STATUSES = frozenset({"online", "launching", "stopping"})


def _process(entry: Mapping[str, Any]) -> Pm2Process:
    env = entry.get("pm2_env")
    env = env if isinstance(env, dict) else {}
    status = str(env.get("status", "unknown"))
    return Pm2Process(
        name=str(entry.get("name", "")),
        pm_id=_int(entry.get("pm_id")) or 0,
        # jlist can still show the dead process's pid for a moment after PM2 gave up ("errored")
        pid=(_int(entry.get("pid")) or None) if status in _LIVE_STATUSES else None,
        status=status,
        restart_time=_int(env.get("restart_time")) or 0,
        unstable_restarts=_int(env.get("unstable_restarts")) or 0,
        exit_code=_int(env.get("exit_code")),
        out_log=str(env.get("pm_out_log_path") or ""),
        err_log=str(env.get("pm_err_log_path") or ""),
    )


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return None
