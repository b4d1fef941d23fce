"""The Alertmanager webhook receiver: `POST /alerts` over HTTP, in a thread of its own.

Checked in this order, each failure answered with a 4xx and nothing acted on: the path (404) and method
(405); the bearer token, compared in constant time (401); a Content-Length within `max_body_bytes` (411,
413; the body is not read when too large); a JSON content type (415); the v4 payload (400). A valid payload
is handed to the event loop (bot/observability/alert_intake.py) and answered 200 with what was done.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
from collections.abc import Callable, Coroutine, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bot.errors import HealbotError
from bot.observability.alert_intake import IntakeReport
from bot.observability.alerts import Alert, PayloadError, parse_payload

log = logging.getLogger("healbot.alerts")

PATH = "/alerts"
REQUEST_TIMEOUT_S = 10.0  # a client that stalls mid-request is dropped
HANDOVER_TIMEOUT_S = 30.0
MIN_TOKEN_CHARS = 16

Receive = Callable[[Sequence[Alert]], Coroutine[Any, Any, IntakeReport]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    token: bytes
    max_body_bytes: int
    receive: Receive
    loop: asyncio.AbstractEventLoop


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT_S
    server_version = "healbot"
    sys_version = ""

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != PATH:
            self._answer(HTTPStatus.NOT_FOUND, {"error": f"POST to {PATH}"})
            return
        if not self._authorised():
            self._answer(
                HTTPStatus.UNAUTHORIZED,
                {"error": "a valid bearer token is required"},
                extra={"WWW-Authenticate": 'Bearer realm="healbot"'},
            )
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._answer(HTTPStatus.LENGTH_REQUIRED, {"error": "Content-Length is required"})
            return
        if int(length) > self.server.max_body_bytes:
            self._answer(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                {"error": f"the body is larger than {self.server.max_body_bytes} bytes"},
            )
            return
        content_type = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if content_type != "application/json":
            self._answer(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {"error": "Content-Type must be application/json"}
            )
            return
        body = self.rfile.read(int(length))
        try:
            alerts = parse_payload(body)
        except PayloadError as exc:
            log.warning("alert webhook: refused a malformed payload: %s", exc)
            self._answer(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        future = asyncio.run_coroutine_threadsafe(self.server.receive(alerts), self.server.loop)
        try:
            report = future.result(timeout=HANDOVER_TIMEOUT_S)
        except (HealbotError, TimeoutError) as exc:
            future.cancel()
            log.error("alert webhook: the alerts were not taken in: %s", exc)
            self._answer(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "not taken in; Alertmanager retries"})
            return
        self._answer(HTTPStatus.OK, report.as_json())

    def do_GET(self) -> None:
        self._not_allowed()

    def do_PUT(self) -> None:
        self._not_allowed()

    def do_DELETE(self) -> None:
        self._not_allowed()

    def _not_allowed(self) -> None:
        self._answer(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"POST to {PATH}"}, extra={"Allow": "POST"})

    def _authorised(self) -> bool:
        given = self.headers.get("Authorization") or ""
        scheme, _, token = given.partition(" ")
        # compare_digest over bytes: the time taken says nothing about how much of the token matched
        return hmac.compare_digest(token.strip().encode(), self.server.token) and scheme.lower() == "bearer"

    def _answer(
        self, status: HTTPStatus, body: dict[str, object], extra: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        log.debug("alert webhook: " + format, *args)


class AlertServer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        token: str,
        max_body_bytes: int,
        receive: Receive,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        if len(token) < MIN_TOKEN_CHARS:
            raise HealbotError(f"the alert webhook token must be at least {MIN_TOKEN_CHARS} characters")
        self.host = host
        self.port = port
        self._token = token.encode()
        self._max_body_bytes = max_body_bytes
        self._receive = receive
        self._loop = loop
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        try:
            server = _Server((self.host, self.port), _Handler)
        except OSError as exc:
            raise HealbotError(f"[alerts] cannot listen on {self.host}:{self.port}: {exc}") from exc
        server.token = self._token
        server.max_body_bytes = self._max_body_bytes
        server.receive = self._receive
        server.loop = self._loop
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="alert-webhook", daemon=True
        )
        self._thread.start()
        log.info("Alertmanager webhook on http://%s:%d%s", self.host, self.port, PATH)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
