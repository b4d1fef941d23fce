"""supervisord's XML-RPC interface over its unix socket: one call, with a timeout, failures in plain words.

supervisor's own transport has no timeout: a stalled supervisord would hang the caller forever. Here every
call connects with `timeout_s`, and what went wrong (no socket, a stale socket, no permission, no answer)
becomes a ServiceError saying so and what to do; an XML-RPC fault becomes a SupervisorFault with its code.
"""

from __future__ import annotations

import http.client
import socket
import xmlrpc.client
from typing import Any
from xml.parsers.expat import ExpatError

from bot.errors import ServiceError

# supervisor.xmlrpc.Faults codes
BAD_NAME = 10
NOT_RUNNING = 70

_SCHEME = "unix://"
_START_HINT = "start it with `supervisord -c /path/to/supervisord.conf`"


class SupervisorFault(ServiceError):
    """supervisord answered with an XML-RPC fault; `code` is one of supervisor.xmlrpc.Faults."""

    def __init__(self, code: int, text: str) -> None:
        self.code = code
        super().__init__(text)


def strip_scheme(socket_url: str) -> str:
    """`unix:///run/supervisor.sock` (supervisorctl's serverurl form) or a plain path → the path."""
    return socket_url[len(_SCHEME) :] if socket_url.startswith(_SCHEME) else socket_url


def call(socket_path: str, method: str, *args: object, timeout_s: float) -> Any:
    """`supervisor.<method>(*args)` on the supervisord listening at `socket_path`."""
    proxy = xmlrpc.client.ServerProxy(
        "http://localhost", transport=UnixSocketTransport(socket_path, timeout_s)
    )
    try:
        with proxy:
            return getattr(proxy.supervisor, method)(*args)
    except xmlrpc.client.Fault as fault:
        raise SupervisorFault(fault.faultCode, fault.faultString) from None
    except FileNotFoundError:
        raise ServiceError(
            f"supervisord socket {socket_path} not found: is supervisord running? {_START_HINT}"
        ) from None
    except ConnectionRefusedError:
        raise ServiceError(
            f"supervisord socket {socket_path} refused the connection: supervisord is not running "
            f"(a stale socket file); {_START_HINT}"
        ) from None
    except PermissionError:
        raise ServiceError(
            f"no permission to open supervisord socket {socket_path}: run healbot as a user allowed "
            "by [unix_http_server] chmod/chown"
        ) from None
    except TimeoutError:
        raise ServiceError(
            f"supervisord at {socket_path} did not answer {method} within {timeout_s:g}s"
        ) from None
    except (OSError, http.client.HTTPException, xmlrpc.client.Error, ExpatError) as exc:
        raise ServiceError(f"supervisord at {socket_path}: {method} failed: {exc}") from None


class UnixSocketTransport(xmlrpc.client.Transport):
    """xmlrpc.client's transport, connecting to a unix socket with a timeout."""

    def __init__(self, socket_path: str, timeout_s: float) -> None:
        super().__init__()
        self.socket_path = socket_path
        self.timeout_s = timeout_s

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        connection = _UnixHTTPConnection(self.socket_path, self.timeout_s)
        self._connection = (host, connection)  # so that close() closes it
        return connection


class _UnixHTTPConnection(http.client.HTTPConnection):
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
