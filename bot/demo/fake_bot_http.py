"""The fake Bot API's HTTP side: a threaded server on 127.0.0.1 that parses Bot API requests (query string,
JSON, form or multipart body), hands them to the fake, and answers in Telegram's envelope."""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

from bot.demo.fake_bot_records import ApiError, Call

_METHOD_PATH = re.compile(r"^/bot([^/]+)/([A-Za-z]+)$")


class BotApiBackend(Protocol):
    """What the HTTP side needs of the fake."""

    @property
    def down(self) -> str | None: ...

    def knows_token(self, token: str) -> bool: ...

    def handle(self, method: str, params: dict[str, Any], files: dict[str, bytes], token: str) -> Any: ...

    def record(self, call: Call) -> None: ...

    def before_answer(self, method: str, params: dict[str, Any]) -> None: ...


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeBotServer:
    """Serves `api` on 127.0.0.1:`port` in a daemon thread; it can stop and serve again on the same port."""

    def __init__(self, api: BotApiBackend, port: int) -> None:
        self._api = api
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def serve(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self._port), _handler_for(self._api))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="fake-bot-api", daemon=True)
        self._thread.start()

    def unserve(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def _handler_for(backend: BotApiBackend) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        api = backend

    return Handler


class _Handler(BaseHTTPRequestHandler):
    api: BotApiBackend  # HTTP/1.0: one request per connection, so "refuse" really refuses at once

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length", 0) or 0)
        body = self.rfile.read(length) if length else b""
        match = _METHOD_PATH.match(parts.path)
        if match is None:
            self._send_json(404, _error(404, "Not Found"))
            return
        token, method = match.groups()
        params, files = parse_body(self.headers.get("Content-Type", ""), body)
        params.update(dict(parse_qsl(parts.query)))
        api = self.api
        if api.down == "502":
            api.record(Call(method, params, 502, "Bad Gateway", time.time()))
            self._send_raw(502, b"<html><body>502 Bad Gateway</body></html>", "text/html")
            return
        if not api.knows_token(token):
            api.record(Call(method, params, 401, "Unauthorized", time.time(), token=token))
            self._send_json(401, _error(401, "Unauthorized"))
            return
        result: Any = None
        error: str | None = None
        try:
            result = api.handle(method, params, files, token)
        except ApiError as exc:
            status, error = exc.code, exc.description
            payload = _error(exc.code, exc.description, exc.retry_after)
        else:
            status, payload = 200, {"ok": True, "result": result}
        if api.down == "502":  # went down while the call was handled (a long poll)
            self._send_raw(502, b"502 Bad Gateway", "text/html")
            return
        api.record(Call(method, params, status, error, time.time(), result, files, token))
        if status == 200:
            api.before_answer(method, params)
        self._send_json(status, payload)

    def _send_json(self, status: int, payload: object) -> None:
        self._send_raw(status, json.dumps(payload).encode("utf-8"), "application/json")

    def _send_raw(self, status: int, data: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass


def _error(code: int, description: str, retry_after: int | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if retry_after is not None:
        payload["parameters"] = {"retry_after": retry_after}
    return payload


def parse_body(content_type: str, body: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A request body's fields and, for multipart, its files (PTB's attach:// references resolved)."""
    if not body:
        return {}, {}
    if content_type.startswith("application/json"):
        return dict(json.loads(body)), {}
    if content_type.startswith("multipart/form-data"):
        return _parse_multipart(content_type, body)
    return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True)), {}


def _parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    parser = email.parser.BytesParser(policy=email.policy.HTTP)
    message = parser.parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    params: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = str(part.get_param("name", header="content-disposition"))
        filename = part.get_filename()
        raw_payload = part.get_payload(decode=True)
        payload = raw_payload if isinstance(raw_payload, bytes) else b""
        if filename is not None:
            files[name] = payload
            params[f"_{name}_filename"] = filename
        else:
            params[name] = payload.decode("utf-8")
    # PTB sends the file as an attach:// reference in the field of the same name
    for name, value in list(params.items()):
        if isinstance(value, str) and value.startswith("attach://"):
            ref = value.removeprefix("attach://")
            if ref in files:
                files[name] = files[ref]
                params[f"_{name}_filename"] = params.get(f"_{ref}_filename", "document")
    return params, files
