"""A program under supervisord, driven by XML-RPC over its unix socket.

    [services.web.manager]
    type = "supervisord"
    socket = "/run/supervisor.sock"   # or "unix:///run/supervisor.sock"; the [unix_http_server] file
    program = "web"                   # optional, default: the service name ("group:name" works too)
    timeout_s = 30                    # optional: per RPC call and for the program to reach RUNNING

Restart is stopProcess(wait=True) + startProcess(wait=False), then the state is polled: that reaches
healthy in ~0.1 s where `supervisorctl restart` waits a whole `startsecs`. BACKOFF, EXITED and FATAL are
reported with supervisord's own reason (spawnerr), never hidden.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from bot import supervisor_rpc
from bot.errors import RestartFailed, ServiceError
from bot.models import ServiceState, ServiceStatus
from bot.supervisor_rpc import BAD_NAME, NOT_RUNNING, SupervisorFault
from healers.services.base import Options, resolve_path, wait_until_settled

DEFAULT_TIMEOUT_S = 30.0

_STATES = {
    "RUNNING": ServiceState.RUNNING,
    "STARTING": ServiceState.STARTING,
    "BACKOFF": ServiceState.CRASH_LOOP,
    "FATAL": ServiceState.FATAL,
    "STOPPED": ServiceState.STOPPED,
    "STOPPING": ServiceState.STOPPED,
}


class SupervisordManager:
    def __init__(
        self,
        service: str,
        *,
        socket_path: str,
        program: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.service = service
        self.socket_path = socket_path
        self.program = program or service
        self.timeout_s = timeout_s

    @classmethod
    def from_options(
        cls, service: str, options: Mapping[str, object], config_path: str
    ) -> SupervisordManager:
        opts = Options(service, options, config_path)
        raw_socket = supervisor_rpc.strip_scheme(opts.required_string("socket"))
        if "://" in raw_socket:
            raise opts.error("socket", f"must be a unix socket path or unix:///path, not {raw_socket!r}")
        if not raw_socket:
            raise opts.error("socket", "must name the socket file, e.g. unix:///run/supervisor.sock")
        manager = cls(
            service,
            socket_path=resolve_path(raw_socket, config_path),
            program=opts.string("program"),
            timeout_s=opts.number("timeout_s", DEFAULT_TIMEOUT_S),
        )
        opts.finish()
        return manager

    @property
    def label(self) -> str:
        return f"supervisord: {self.program}"

    def status(self) -> ServiceStatus:
        return _status_from_info(self._info())

    def restart(self, settle_s: float) -> ServiceStatus:
        try:
            old_pid = self.status().pid
        except ServiceError as exc:
            raise RestartFailed(f"{self.label}: cannot restart: {exc}") from exc
        try:
            self._call("stopProcess", self.program, True)
        except SupervisorFault as fault:
            if fault.code != NOT_RUNNING:
                raise RestartFailed(f"{self.label}: stop failed: {fault}") from None
        except ServiceError as exc:
            raise RestartFailed(f"{self.label}: stop failed: {exc}") from exc
        try:
            self._call("startProcess", self.program, False)
        except SupervisorFault as fault:
            seen = _status_from_info(self._info())
            raise RestartFailed(f"{self.label}: start failed: {fault}; now {seen.detail}") from None
        except ServiceError as exc:
            raise RestartFailed(f"{self.label}: start failed: {exc}") from exc
        return wait_until_settled(
            self.status, label=self.label, settle_s=settle_s, start_timeout_s=self.timeout_s, old_pid=old_pid
        )

    def log_paths(self) -> Sequence[str]:
        info = self._info()
        paths: list[str] = []
        for key in ("stdout_logfile", "stderr_logfile"):
            path = str(info.get(key) or "")
            if path and path not in paths and not path.startswith("/dev/"):
                paths.append(path)
        return tuple(paths)

    def check(self) -> str | None:
        start_hint = "start it with `supervisord -c /path/to/supervisord.conf`"
        if not os.path.exists(self.socket_path):
            return f"supervisord socket {self.socket_path} not found: is supervisord running? {start_hint}"
        try:
            self._info()
        except ServiceError as exc:
            return str(exc)
        return None

    # --- RPC ---------------------------------------------------------------------------------------

    def _info(self) -> dict[str, Any]:
        try:
            info = self._call("getProcessInfo", self.program)
        except SupervisorFault as fault:
            if fault.code == BAD_NAME:
                raise ServiceError(
                    f"supervisord at {self.socket_path} has no program {self.program!r}; "
                    f"known: {', '.join(self._known_programs()) or 'none'}"
                ) from None
            raise ServiceError(f"{self.label}: {fault}") from None
        if not isinstance(info, dict):
            raise ServiceError(f"{self.label}: unexpected getProcessInfo answer {type(info).__name__}")
        return info

    def _known_programs(self) -> list[str]:
        try:
            infos = self._call("getAllProcessInfo")
        except ServiceError:
            return []
        names = []
        for info in infos if isinstance(infos, list) else []:
            name, group = str(info.get("name", "")), str(info.get("group", ""))
            names.append(name if group in ("", name) else f"{group}:{name}")
        return names

    def _call(self, method: str, *args: object) -> Any:
        return supervisor_rpc.call(self.socket_path, method, *args, timeout_s=self.timeout_s)


def _status_from_info(info: Mapping[str, Any]) -> ServiceStatus:
    statename = str(info.get("statename", "UNKNOWN"))
    pid = int(info.get("pid") or 0) or None
    spawnerr = str(info.get("spawnerr") or "")
    exitstatus = int(info.get("exitstatus") or 0)
    if statename == "EXITED":
        state = ServiceState.STOPPED if exitstatus == 0 else ServiceState.CRASH_LOOP
        detail = f"EXITED with status {exitstatus}"
    else:
        state = _STATES.get(statename, ServiceState.UNKNOWN)
        detail = statename
    if spawnerr and state is not ServiceState.RUNNING:
        detail += f": {spawnerr}"
    return ServiceStatus(state, pid=pid, detail=detail)
