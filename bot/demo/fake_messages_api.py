"""A standard-library fake of the Anthropic Messages API (`POST /v1/messages`) on 127.0.0.1.

The real `claude` CLI runs against it with `ANTHROPIC_BASE_URL` pointing here: the tests use it to drive
every success and failure path of the runner, and `healbot demo` uses it to run offline. It only ever
binds the loopback interface.

A request's behaviour is chosen by a `[[scenario:NAME]]` marker anywhere in its messages' text (the first
one wins), else by the server's default scenario. The `tool_use` and `loop` scenarios read the file named
by a `[[read:PATH]]` marker (relative paths are resolved against the working directory the CLI reports),
else the server's `read_path`. The `script` scenario plays `tool_script`: turn N (counted by the tool
turns already in the conversation) calls the tools of step N, then the answer follows; `tool_results()`
gives the results that came back, to check what a tool answered.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

SCENARIOS = (
    "structured",  # a tool_use of the offered StructuredOutput tool with the configured answer
    "text",  # a plain text answer
    "tool_use",  # a Read of a file first; after the tool_result arrives, `structured`
    "loop",  # a Read on every turn, never an answer (drives --max-turns)
    "slow",  # `structured` after `slow_delay_s`
    "hang",  # never sends response headers
    "stall",  # message_start, then nothing
    "overloaded",  # HTTP 529
    "server_error",  # HTTP 500
    "auth",  # HTTP 401
    "malformed",  # a StructuredOutput input that does not match the schema
    "garbage",  # a 200 event stream that is not SSE
    "budget",  # `structured` with huge usage numbers
    "rate_limited",  # HTTP 429 with `retry-after: 0`
    "flaky_overloaded",  # HTTP 529 for the first `flaky_failures` requests so marked, then `structured`
    "flaky_rate_limited",  # HTTP 429 for the first `flaky_failures` requests so marked, then `structured`
    "cut",  # a stream that stops halfway: the connection closes in the middle of the answer
    "script",  # the tool calls of `tool_script`, one step per turn, then `structured`
)

STRUCTURED_TOOL = "StructuredOutput"
DEFAULT_ANSWER: Mapping[str, object] = {
    "summary": "The fake Messages API answered without looking at anything.",
    "candidates": [
        {
            "title": "Restart the service",
            "rationale": "A canned answer from the fake Messages API.",
            "risk": "low",
            "kind": "restart",
        }
    ],
}
MALFORMED_ANSWER: Mapping[str, object] = {"summary": 42, "candidates": "none"}

_SCENARIO_MARKER = re.compile(r"\[\[scenario:([A-Za-z0-9_-]+)\]\]")
_READ_MARKER = re.compile(r"\[\[read:([^\]\s]+)\]\]")
_CWD_LINE = re.compile(r"(?:Primary working directory|Working directory|cwd):\s*(\S+)")

AnswerSource = Callable[[Mapping[str, Any]], object]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool_use block a scripted turn sends: `name` as offered (`mcp__healbot__read_file`)."""

    name: str
    input: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class ToolResult:
    """A tool_result that came back, with the name of the call it answers."""

    name: str
    input: Mapping[str, object]
    text: str
    is_error: bool


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One request the server received. Header names are lower-case; `body` is parsed JSON or None."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any
    scenario: str | None
    at: float

    def text(self) -> str:
        """Everything the client sent, as text (for "does this string appear anywhere" checks)."""
        raw = json.dumps(self.body, ensure_ascii=False) if self.body is not None else ""
        return raw + "\n" + "\n".join(f"{k}: {v}" for k, v in self.headers.items())


@dataclass(frozen=True, slots=True)
class _Usage:
    input_tokens: int = 12
    output_tokens: int = 8


_HUGE_USAGE = _Usage(input_tokens=2_000_000, output_tokens=200_000)


class FakeMessagesApi:
    """Serve the fake on 127.0.0.1 in a daemon thread. `start()` it, read `url`, `stop()` it."""

    def __init__(
        self,
        *,
        default_scenario: str = "structured",
        structured: object | AnswerSource = DEFAULT_ANSWER,
        text: str = "ok",
        read_path: str = "README.md",
        slow_delay_s: float = 0.5,
        port: int = 0,
        flaky_failures: int = 2,
        delta_bytes: int | None = None,
        tool_script: tuple[tuple[ToolCall, ...], ...] = (),
    ) -> None:
        if default_scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {default_scenario!r}; known: {', '.join(SCENARIOS)}")
        self.default_scenario = default_scenario
        self.structured = structured
        self.answer_text = text
        self.read_path = read_path
        self.slow_delay_s = slow_delay_s
        # When set, a `slow` answer waits only until this many requests are in flight at once (or
        # `slow_delay_s` passed): a deterministic barrier for concurrency tests.
        self.slow_until_in_flight: int | None = None
        self.flaky_failures = flaky_failures
        self.tool_script = tool_script
        # When set, each text or tool-input delta is sent in pieces of this many characters, as a real
        # API streams a long answer; `streams_left_early` counts answers the client stopped reading.
        self.delta_bytes = delta_bytes
        self.streams_left_early = 0
        self._flaky_seen: dict[str, int] = {}
        self._port = port
        self._lock = threading.Lock()
        self._in_flight_changed = threading.Condition(self._lock)
        self._journal: list[JournalEntry] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> FakeMessagesApi:
        if self._server is not None:
            return self
        server = ThreadingHTTPServer(("127.0.0.1", self._port), _handler_for(self))
        server.daemon_threads = True
        server.block_on_close = False  # hanging handlers must not block stop()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="fake-messages-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeMessagesApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake Messages API is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # --- what happened -------------------------------------------------------------------------------

    def journal(self) -> tuple[JournalEntry, ...]:
        with self._lock:
            return tuple(self._journal)

    def message_requests(self) -> tuple[JournalEntry, ...]:
        return tuple(e for e in self.journal() if e.method == "POST" and e.path == "/v1/messages")

    def tool_results(self) -> tuple[ToolResult, ...]:
        """Every tool_result in the latest request's conversation, in order (the CLI re-sends them all)."""
        requests = self.message_requests()
        return tool_results_of(requests[-1].body) if requests else ()

    @property
    def max_in_flight(self) -> int:
        """The most `/v1/messages` requests that were being answered at the same time."""
        with self._lock:
            return self._max_in_flight

    def _record(self, entry: JournalEntry) -> None:
        with self._lock:
            self._journal.append(entry)

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            self._in_flight_changed.notify_all()

    def _wait_slow(self) -> None:
        target = self.slow_until_in_flight
        if target is None:
            time.sleep(self.slow_delay_s)
            return
        with self._lock:
            self._in_flight_changed.wait_for(lambda: self._max_in_flight >= target, timeout=self.slow_delay_s)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _flaky_should_fail(self, scenario: str) -> bool:
        with self._lock:
            seen = self._flaky_seen.get(scenario, 0)
            self._flaky_seen[scenario] = seen + 1
            return seen < self.flaky_failures

    def _wait_until_stopped(self) -> None:
        self._stopping.wait()

    # --- answers -------------------------------------------------------------------------------------

    def choose_scenario(self, body: Mapping[str, Any]) -> str:
        match = _SCENARIO_MARKER.search(_messages_text(body))
        return match.group(1) if match else self.default_scenario

    def structured_input(self, body: Mapping[str, Any]) -> object:
        source = self.structured
        return source(body) if callable(source) else source

    def read_target(self, body: Mapping[str, Any]) -> str:
        text = _messages_text(body)
        match = _READ_MARKER.search(text)
        path = match.group(1) if match else self.read_path
        if path.startswith("/"):
            return path
        cwd = _CWD_LINE.search(text + "\n" + _system_text(body))
        return f"{cwd.group(1).rstrip('/')}/{path}" if cwd else path


# --- request handling ---------------------------------------------------------------------------------


def _handler_for(api: FakeMessagesApi) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        fake = api

    return Handler


class _Handler(BaseHTTPRequestHandler):
    fake: FakeMessagesApi
    protocol_version = "HTTP/1.1"
    server_version = "FakeMessagesApi/1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_HEAD(self) -> None:
        self._journal(None, None)
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self._journal(None, None)
        self._send_error(404, "not_found_error", f"the fake serves only POST /v1/messages, not {self.path}")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = urlsplit(self.path).path
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        if path != "/v1/messages":
            self._journal(body, None)
            self._send_error(404, "not_found_error", f"the fake serves only POST /v1/messages, not {path}")
            return
        if not isinstance(body, dict):
            self._journal(body, None)
            self._send_error(400, "invalid_request_error", "the request body must be a JSON object")
            return
        scenario = self.fake.choose_scenario(body)
        self._journal(body, scenario)
        self.fake._enter()
        try:
            self._answer(body, scenario)
        except (BrokenPipeError, ConnectionResetError):
            with self.fake._lock:  # the client went away (killed, or it stopped reading); nothing to answer
                self.fake.streams_left_early += 1
        finally:
            self.fake._leave()

    def _journal(self, body: Any, scenario: str | None) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        path = urlsplit(self.path).path
        self.fake._record(JournalEntry(self.command, path, headers, body, scenario, time.time()))

    def _answer(self, body: Mapping[str, Any], scenario: str) -> None:
        stream = bool(body.get("stream"))
        model = str(body.get("model") or "claude-fake")
        if scenario == "hang":
            self.fake._wait_until_stopped()
            return
        if scenario == "overloaded":
            self._send_error(529, "overloaded_error", "Overloaded (fake)")
            return
        if scenario == "server_error":
            self._send_error(500, "api_error", "Internal server error (fake)")
            return
        if scenario == "auth":
            self._send_error(401, "authentication_error", "invalid x-api-key (fake)")
            return
        if scenario == "rate_limited" or (
            scenario == "flaky_rate_limited" and self.fake._flaky_should_fail(scenario)
        ):
            self._send_error(429, "rate_limit_error", "Rate limited (fake)", retry_after="0")
            return
        if scenario == "flaky_overloaded" and self.fake._flaky_should_fail(scenario):
            self._send_error(529, "overloaded_error", "Overloaded (fake)")
            return
        if scenario not in SCENARIOS:
            known = ", ".join(SCENARIOS)
            self._send_error(400, "invalid_request_error", f"unknown scenario {scenario!r}; known: {known}")
            return
        if scenario == "garbage":
            self._send_garbage()
            return
        if scenario == "stall":
            self._start_stream()
            self._event("message_start", _message_start(model, _Usage()))
            self.fake._wait_until_stopped()
            return
        if scenario == "slow":
            self.fake._wait_slow()
        blocks, stop_reason, usage = self._content_for(body, scenario)
        if scenario == "cut":
            self._send_cut_stream(model, blocks, usage)
            return
        if stream:
            self._send_stream(model, blocks, stop_reason, usage)
        else:
            self._send_json(200, _message(model, blocks, stop_reason, usage))

    def _content_for(
        self, body: Mapping[str, Any], scenario: str
    ) -> tuple[list[dict[str, Any]], str, _Usage]:
        usage = _HUGE_USAGE if scenario == "budget" else _Usage()
        if scenario == "text":
            return [{"type": "text", "text": self.fake.answer_text}], "end_turn", usage
        if scenario == "malformed" and _last_turn_has_tool_result(body):
            # The CLI rejected the answer against the schema; a model that gives up answers in prose.
            return (
                [{"type": "text", "text": "I could not produce an answer in the required form."}],
                "end_turn",
                usage,
            )
        if scenario == "script":
            step = _tool_turns(body)
            if step < len(self.fake.tool_script):
                calls = [_tool_use(call.name, dict(call.input)) for call in self.fake.tool_script[step]]
                return calls, "tool_use", usage
        wants_read = scenario == "loop" or (scenario == "tool_use" and not _last_turn_has_tool_result(body))
        if wants_read:
            read = _tool_use("Read", {"file_path": self.fake.read_target(body)})
            return [read], "tool_use", usage
        answer: object = MALFORMED_ANSWER if scenario == "malformed" else self.fake.structured_input(body)
        if STRUCTURED_TOOL in _offered_tools(body):
            return [_tool_use(STRUCTURED_TOOL, answer)], "tool_use", usage
        return [{"type": "text", "text": json.dumps(answer)}], "end_turn", usage

    # --- wire formats --------------------------------------------------------------------------------

    def _send_error(self, status: int, kind: str, message: str, *, retry_after: str | None = None) -> None:
        payload = {"type": "error", "error": {"type": kind, "message": message}}
        self._send_json(status, payload, retry_after=retry_after)

    def _send_json(self, status: int, payload: object, *, retry_after: str | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if retry_after is not None:
            self.send_header("retry-after", retry_after)
        self.send_header("request-id", _new_id("req_fake_"))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("request-id", _new_id("req_fake_"))
        self.end_headers()
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _event(self, name: str, payload: Mapping[str, Any]) -> None:
        self._chunk(f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode())

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _send_garbage(self) -> None:
        self._start_stream()
        self._chunk(b"this is not a server-sent event stream\n{{{ garbage ]]]\n\n")
        self._end_stream()

    def _send_cut_stream(self, model: str, blocks: list[dict[str, Any]], usage: _Usage) -> None:
        """Half of the first block, then the connection closes without ending the chunked body."""
        self._start_stream()
        self._event("message_start", _message_start(model, usage))
        block = blocks[0]
        if block["type"] == "text":
            start: dict[str, Any] = {"type": "text", "text": ""}
            whole = str(block["text"])
            delta: dict[str, Any] = {"type": "text_delta", "text": whole[: len(whole) // 2]}
        else:
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            whole = json.dumps(block["input"])
            delta = {"type": "input_json_delta", "partial_json": whole[: len(whole) // 2]}
        self._event(
            "content_block_start", {"type": "content_block_start", "index": 0, "content_block": start}
        )
        self._event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def _send_stream(self, model: str, blocks: list[dict[str, Any]], stop_reason: str, usage: _Usage) -> None:
        self._start_stream()
        self._event("message_start", _message_start(model, usage))
        self._event("ping", {"type": "ping"})
        for index, block in enumerate(blocks):
            if block["type"] == "text":
                start: dict[str, Any] = {"type": "text", "text": ""}
                delta: dict[str, Any] = {"type": "text_delta", "text": block["text"]}
            else:
                start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
                delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
            self._event(
                "content_block_start", {"type": "content_block_start", "index": index, "content_block": start}
            )
            for piece in _pieces(delta, self.fake.delta_bytes):
                self._event(
                    "content_block_delta", {"type": "content_block_delta", "index": index, "delta": piece}
                )
            self._event("content_block_stop", {"type": "content_block_stop", "index": index})
        self._event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": usage.output_tokens},
            },
        )
        self._event("message_stop", {"type": "message_stop"})
        self._end_stream()


# --- message helpers ----------------------------------------------------------------------------------


def _pieces(delta: dict[str, Any], size: int | None) -> list[dict[str, Any]]:
    """One delta, or the same text cut into deltas of `size` characters."""
    key = "text" if delta["type"] == "text_delta" else "partial_json"
    whole = str(delta[key])
    if not size or len(whole) <= size:
        return [delta]
    return [{**delta, key: whole[i : i + size]} for i in range(0, len(whole), size)]


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def _usage_json(usage: _Usage, output_tokens: int) -> dict[str, int]:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _message_start(model: str, usage: _Usage) -> dict[str, Any]:
    message = _message(model, [], None, usage)
    message["usage"] = _usage_json(usage, 1)
    return {"type": "message_start", "message": message}


def _message(
    model: str, blocks: list[dict[str, Any]], stop_reason: str | None, usage: _Usage
) -> dict[str, Any]:
    return {
        "id": _new_id("msg_fake_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": _usage_json(usage, usage.output_tokens),
    }


def _tool_use(name: str, tool_input: object) -> dict[str, Any]:
    return {"type": "tool_use", "id": _new_id("toolu_fake_"), "name": name, "input": tool_input}


def _offered_tools(body: Mapping[str, Any]) -> set[str]:
    tools = body.get("tools")
    if not isinstance(tools, list):
        return set()
    return {str(t.get("name")) for t in tools if isinstance(t, dict)}


def _block_text(block: object) -> str:
    if isinstance(block, str):
        return block
    if not isinstance(block, dict):
        return ""
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", ""))
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, list):
            return "\n".join(_block_text(b) for b in content)
        return str(content or "")
    return ""


def _content_text(content: object) -> str:
    if isinstance(content, list):
        return "\n".join(_block_text(b) for b in content)
    return _block_text(content)


def _messages_text(body: Mapping[str, Any]) -> str:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return ""
    return "\n".join(_content_text(m.get("content")) for m in messages if isinstance(m, dict))


def _system_text(body: Mapping[str, Any]) -> str:
    return _content_text(body.get("system"))


def _tool_turns(body: Mapping[str, Any]) -> int:
    """Assistant turns that called a tool other than the answer tool since the latest prompt (a user
    turn that is not only tool results): a resumed session plays the script again for its new prompt."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return 0
    turns = 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        blocks = content if isinstance(content, list) else [content]
        if message.get("role") == "user" and not all(
            isinstance(b, dict) and b.get("type") == "tool_result" for b in blocks
        ):
            turns = 0
        elif message.get("role") == "assistant" and any(
            isinstance(b, dict) and b.get("type") == "tool_use" and b.get("name") != STRUCTURED_TOOL
            for b in blocks
        ):
            turns += 1
    return turns


def tool_results_of(body: Any) -> tuple[ToolResult, ...]:
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list):
        return ()
    calls: dict[str, tuple[str, Mapping[str, object]]] = {}
    results: list[ToolResult] = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for block in content:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "tool_use":
                calls[str(block.get("id"))] = (str(block.get("name")), block.get("input") or {})
            elif block.get("type") == "tool_result":
                name, tool_input = calls.get(str(block.get("tool_use_id")), ("?", {}))
                results.append(ToolResult(name, tool_input, _block_text(block), bool(block.get("is_error"))))
    return tuple(results)


def _last_turn_has_tool_result(body: Mapping[str, Any]) -> bool:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return False
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return isinstance(content, list) and any(
                isinstance(b, dict) and b.get("type") == "tool_result" for b in content
            )
    return False


def main(argv: list[str] | None = None) -> None:
    """`python -m bot.demo.fake_messages_api --port 18080 --scenario text` for trying the CLI by hand."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--scenario", choices=SCENARIOS, default="structured")
    args = parser.parse_args(argv)
    api = FakeMessagesApi(default_scenario=args.scenario, port=args.port).start()
    print(api.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        api.stop()


if __name__ == "__main__":
    main()
