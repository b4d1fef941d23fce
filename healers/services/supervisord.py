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

import http.client
import os
import socket
import xmlrpc.client
from collections.abc import Mapping, Sequence
from typing import Any

from bot.errors import RestartFailed, ServiceError
from bot.models import ServiceState, ServiceStatus
from healers.services.base import Options, resolve_path, wait_until_settled

DEFAULT_TIMEOUT_S = 30.0

# supervisor.xmlrpc.Faults codes
_BAD_NAME = 10
_NOT_RUNNING = 70

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
        raw_socket = opts.required_string("socket")
        if raw_socket.startswith("unix://"):
            raw_socket = raw_socket[len("unix://") :]
        elif "://" in raw_socket:
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
        except _Fault as fault:
            if fault.code != _NOT_RUNNING:
                raise RestartFailed(f"{self.label}: stop failed: {fault}") from None
        except ServiceError as exc:
            raise RestartFailed(f"{self.label}: stop failed: {exc}") from exc
        try:
            self._call("startProcess", self.program, False)
        except _Fault as fault:
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
        except _Fault as fault:
            if fault.code == _BAD_NAME:
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
        proxy = xmlrpc.client.ServerProxy(
            "http://localhost", transport=_UnixSocketTransport(self.socket_path, self.timeout_s)
        )
        try:
            with proxy:
                return getattr(proxy.supervisor, method)(*args)
        except xmlrpc.client.Fault as fault:
            raise _Fault(fault.faultCode, fault.faultString) from None
        except FileNotFoundError:
            raise ServiceError(
                f"supervisord socket {self.socket_path} not found: is supervisord running? "
                "start it with `supervisord -c /path/to/supervisord.conf`"
            ) from None
        except ConnectionRefusedError:
            raise ServiceError(
                f"supervisord socket {self.socket_path} refused the connection: supervisord is not running "
                "(a stale socket file); start it with `supervisord -c /path/to/supervisord.conf`"
            ) from None
        except PermissionError:
            raise ServiceError(
                f"no permission to open supervisord socket {self.socket_path}: run healbot as a user allowed "
                "by [unix_http_server] chmod/chown"
            ) from None
        except TimeoutError:
            raise ServiceError(
                f"supervisord at {self.socket_path} did not answer {method} within {self.timeout_s:g}s"
            ) from None
        except (OSError, http.client.HTTPException, xmlrpc.client.ProtocolError) as exc:
            raise ServiceError(f"supervisord at {self.socket_path}: {method} failed: {exc}") from None


class _Fault(ServiceError):
    def __init__(self, code: int, text: str) -> None:
        self.code = code
        super().__init__(text)


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


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket with a timeout (supervisor's own transport has none: a stalled supervisord
    would hang the caller forever)."""

    def __init__(self, socket_path: str, timeout_s: float) -> None:
        super().__init__("localhost", timeout=timeout_s)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _UnixSocketTransport(xmlrpc.client.Transport):
    def __init__(self, socket_path: str, timeout_s: float) -> None:
        super().__init__()
        self.socket_path = socket_path
        self.timeout_s = timeout_s

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        connection = _UnixHTTPConnection(self.socket_path, self.timeout_s)
        self._connection = (host, connection)  # so that close() closes it
        return connection
