"""What every service manager shares: option parsing, running commands, and the restart settle check.

"Restarted" means up AND still up after the settle period: the state reads running, the pid did not
change and the manager did not restart it again. `wait_until_settled` implements that once for all
managers; each manager only knows how to read its own status.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot import proc
from bot.errors import ConfigError, RestartFailed, ServiceError
from bot.models import ServiceState, ServiceStatus

POLL_INTERVAL_S = 0.1
OUTPUT_TAIL_CHARS = 600
MAX_OPTION_SECONDS = 86400.0  # a manager timeout beyond a day is a typo, and 1e308 would break timers

# A command runner takes an argv list and returns (exit code, stdout, stderr). Injected in tests so
# recorded outputs stand in for systemctl/docker; production uses `subprocess_runner`.
CommandRunner = Callable[[Sequence[str]], tuple[int, str, str]]

_FAILED_STATES = frozenset({ServiceState.FATAL, ServiceState.CRASH_LOOP})


@dataclass(frozen=True, slots=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


def run_command(
    argv: Sequence[str],
    *,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> CommandResult:
    """bot.proc.run, raising ServiceError when the command cannot start or does not finish in time.

    It returns as soon as the command itself exits, even when it left a daemon behind holding its output.
    """
    result = proc.run(argv, timeout_s=timeout_s, env=env, cwd=cwd, error=ServiceError)
    if result.returncode is None:
        raise ServiceError(f"`{argv[0]}` did not finish within {timeout_s:g}s and was killed")
    return CommandResult(result.returncode, result.stdout_text, result.stderr_text)


def subprocess_runner(timeout_s: float, env: Mapping[str, str] | None = None) -> CommandRunner:
    """The production CommandRunner: `run_command` with a fixed timeout."""

    def run(argv: Sequence[str]) -> tuple[int, str, str]:
        result = run_command(argv, timeout_s=timeout_s, env=env)
        return result.returncode, result.stdout, result.stderr

    return run


def tail(text: str, limit: int = OUTPUT_TAIL_CHARS) -> str:
    """The last `limit` characters of command output, stripped, for error messages."""
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-limit:]


def missing_binary(binary: str, *, label: str, hint: str, search_path: str | None = None) -> str | None:
    """Why `binary` cannot be started, for `check()`, or None when it can. A name with a slash is a file
    that must exist and be executable; a bare name is looked up on `search_path` (default: the PATH).

    `label` names it ("pm2 binary", "command"); `hint` says what to do when a bare name is not found.
    """
    if "/" in binary:
        if not os.path.isfile(binary):
            return f"{label} {binary} does not exist"
        if not os.access(binary, os.X_OK):
            return f"{label} {binary} is not executable (chmod +x it)"
        return None
    if shutil.which(binary, path=search_path) is None:
        return f"{label} {binary!r} is not on the PATH: {hint}"
    return None


# --- options ---------------------------------------------------------------------------------------


class Options:
    """Typed reader over one `[services.X.manager]` table. Errors name `services.X.manager.KEY`."""

    def __init__(self, service: str, options: Mapping[str, object], config_path: str) -> None:
        self.service = service
        self.data = options
        self.config_path = config_path
        self.known: set[str] = set()

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, path=self.config_path, key=f"services.{self.service}.manager.{key}")

    def _raw(self, key: str, *, required: bool) -> object | None:
        self.known.add(key)
        if key not in self.data:
            if required:
                raise self.error(key, "is required but missing")
            return None
        return self.data[key]

    def string(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self._raw(key, required=required)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, not {_type_name(value)}")
        if not value.strip():
            raise self.error(key, "must not be empty")
        return value

    def required_string(self, key: str) -> str:
        value = self.string(key, required=True)
        assert value is not None
        return value

    def number(self, key: str, default: float) -> float:
        value = self._raw(key, required=False)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"must be a number, not {_type_name(value)}")
        if not math.isfinite(value) or not 0 < value <= MAX_OPTION_SECONDS:
            raise self.error(
                key,
                f"must be a number greater than 0 and at most {MAX_OPTION_SECONDS:.0f} seconds, not {value}",
            )
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self._raw(key, required=False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, not {_type_name(value)}")
        return value

    def argv(self, key: str, *, required: bool = False) -> tuple[str, ...] | None:
        value = self._raw(key, required=required)
        if value is None:
            return None
        if not isinstance(value, list) or not value:
            raise self.error(
                key,
                f'must be a non-empty argv list such as ["systemctl", "restart", "web"], '
                f"not {_type_name(value)}",
            )
        for item in value:
            if not isinstance(item, str) or not item:
                raise self.error(key, f"must be a list of non-empty strings; {item!r} is not")
        return tuple(value)

    def path(self, key: str, *, required: bool = False) -> str | None:
        """A file path; relative paths are taken relative to the config file's folder."""
        value = self.string(key, required=required)
        if value is None:
            return None
        return resolve_path(value, self.config_path)

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.known)
        if unknown:
            raise self.error(unknown[0], f"unknown option (known: type, {', '.join(sorted(self.known))})")


def resolve_path(value: str, config_path: str) -> str:
    path = Path(os.path.expanduser(value))
    if not path.is_absolute():
        path = Path(config_path).resolve().parent / path
    return str(path)


def _type_name(value: object) -> str:
    names = {
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        list: "a list",
        dict: "a table",
    }
    return f"{names.get(type(value), type(value).__name__)} ({value!r})"


# --- the settle check ------------------------------------------------------------------------------


def describe(status: ServiceStatus) -> str:
    parts = [status.detail or status.state.value]
    if status.pid:
        parts.append(f"pid {status.pid}")
    return ", ".join(parts)


def wait_until_settled(
    read_status: Callable[[], ServiceStatus],
    *,
    label: str,
    settle_s: float,
    start_timeout_s: float,
    old_pid: int | None = None,
    interval_s: float = POLL_INTERVAL_S,
) -> ServiceStatus:
    """Poll after a restart: first until running (with a pid other than `old_pid`), then for `settle_s`
    more seconds during which it must stay running with the same pid and restart counter.

    `label` starts every message, e.g. "supervisord: web". Raises RestartFailed saying what was seen.
    """
    status = _wait_running(
        read_status, label=label, timeout_s=start_timeout_s, old_pid=old_pid, interval_s=interval_s
    )
    deadline = time.monotonic() + settle_s
    while True:
        time.sleep(min(interval_s, max(0.0, deadline - time.monotonic())))
        current = _read(read_status, label)
        _check_still_up(status, current, label=label, settle_s=settle_s)
        if time.monotonic() >= deadline:
            return current


def _wait_running(
    read_status: Callable[[], ServiceStatus],
    *,
    label: str,
    timeout_s: float,
    old_pid: int | None,
    interval_s: float,
) -> ServiceStatus:
    deadline = time.monotonic() + timeout_s
    while True:
        status = _read(read_status, label)
        if status.state in _FAILED_STATES:
            raise RestartFailed(f"{label} entered {describe(status)}")
        is_new = old_pid is None or status.pid is None or status.pid != old_pid
        if status.state is ServiceState.RUNNING and is_new:
            return status
        if time.monotonic() >= deadline:
            seen = describe(status)
            if status.state is ServiceState.RUNNING and not is_new:
                seen += " (still the process from before the restart)"
            raise RestartFailed(f"{label} did not come up within {timeout_s:g}s; last seen: {seen}")
        time.sleep(interval_s)


def _check_still_up(first: ServiceStatus, current: ServiceStatus, *, label: str, settle_s: float) -> None:
    within = f"within {settle_s:g}s of the restart"
    if current.state is not ServiceState.RUNNING:
        raise RestartFailed(
            f"{label} came up (pid {first.pid}) but then entered {describe(current)} {within}"
        )
    if first.pid is not None and current.pid is not None and current.pid != first.pid:
        raise RestartFailed(
            f"{label} was restarted again {within} (pid {first.pid} → {current.pid}): it is crash-looping"
        )
    if first.restarts is not None and current.restarts is not None and current.restarts > first.restarts:
        raise RestartFailed(
            f"{label} was restarted {current.restarts - first.restarts} more time(s) by its manager {within} "
            f"(restart counter {first.restarts} → {current.restarts}): it is crash-looping"
        )


def _read(read_status: Callable[[], ServiceStatus], label: str) -> ServiceStatus:
    try:
        return read_status()
    except RestartFailed:
        raise
    except ServiceError as exc:
        raise RestartFailed(f"{label}: could not read its status after the restart: {exc}") from exc
