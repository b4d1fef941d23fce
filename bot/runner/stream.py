"""Reading `claude -p --output-format stream-json` line by line, and turning its end into a result or an
error of the RunnerError tree.

Facts this relies on (notes/claude-cli.md): API errors end with `subtype:"success"` and `is_error:true`,
so success is exit 0 AND `is_error` false; limits end with `subtype` `error_max_turns` or
`error_max_budget_usd`; a missing `result` line means the process was killed or interrupted; cost is
`total_cost_usd`; unknown event types are ignored.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bot.errors import (
    RunnerAuthError,
    RunnerError,
    RunnerLimitReached,
    RunnerOutputError,
    RunnerOverloaded,
    RunnerTimeout,
)
from bot.mcp_server.looked_at import tool_name
from bot.models import RunResult, RunStats

log = logging.getLogger(__name__)
MESSAGE_CAP = 500  # characters of the CLI's own words quoted in an error message
SCHEMA_REJECTION = "Output does not match required schema"

_AUTH_STATUS = frozenset({401, 403})
_AUTH_TYPES = frozenset({"authentication_error", "permission_error"})
_AUTH_WORDS = ("not logged in", "invalid api key", "failed to authenticate", "please run /login")
_OVERLOAD_STATUS = frozenset({429, 529})
_OVERLOAD_TYPES = frozenset({"overloaded_error", "rate_limit_error"})
_OVERLOAD_WORDS = ("overloaded", "rate limit")
_LIMIT_SUBTYPES = frozenset({"error_max_turns", "error_max_budget_usd"})


NOT_COUNTED = frozenset({"StructuredOutput"})  # the answer itself, not a look at anything


@dataclass(slots=True)
class ToolLedger:
    """The tool calls of one run, as claude reported them: name, arguments, the answer's size."""

    calls: int = 0
    bytes: int = 0
    by_tool: dict[str, int] = field(default_factory=dict)  # in order of first use
    _pending: dict[str, tuple[int, str, str]] = field(default_factory=dict)  # id → (n, name, args)

    def called(self, block: dict[str, Any]) -> None:
        name = tool_name(str(block.get("name")))
        if name in NOT_COUNTED:
            return
        self.calls += 1
        self.by_tool[name] = self.by_tool.get(name, 0) + 1
        args = json.dumps(block.get("input"), ensure_ascii=False)[:300]
        self._pending[str(block.get("id"))] = (self.calls, name, args)

    def answered(self, block: dict[str, Any]) -> None:
        pending = self._pending.pop(str(block.get("tool_use_id")), None)
        if pending is None:
            return
        content = block.get("content")
        if isinstance(content, list):
            content = "".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
        size = len(str(content or "").encode("utf-8"))
        self.bytes += size
        number, name, args = pending
        error = " (error)" if block.get("is_error") else ""
        log.info("tool call %d: %s %s → %d bytes%s", number, name, args, size, error)

    def counts(self) -> tuple[tuple[str, int], ...]:
        return tuple(self.by_tool.items())


def tool_cap_problem(tools: ToolLedger, *, max_calls: int, max_bytes: int) -> str | None:
    """Why a run that looked this much must end now, or None (both runners end it the same way)."""
    if tools.calls > max_calls:
        why = f"{tools.calls} tool calls, over the cap of {max_calls} ([claude] max_tool_calls)"
    elif tools.bytes > max_bytes:
        why = f"{tools.bytes} bytes of tool answers, over the cap of {max_bytes} ([claude] max_tool_bytes)"
    else:
        return None
    return f"the diagnosis was ended after {why}"


def cap(text: str, limit: int = MESSAGE_CAP) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(slots=True)
class StreamState:
    """What has been seen so far on claude's stdout. Fed one line at a time."""

    session_id: str | None = None
    result: dict[str, Any] | None = None
    events: int = 0
    garbage_lines: int = 0
    api_retries: int = 0
    last_schema_rejection: str | None = None
    first_garbage: str = ""
    event_types: set[str] = field(default_factory=set)
    tools: ToolLedger = field(default_factory=ToolLedger)

    def feed(self, raw: bytes | str) -> None:
        line = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        line = line.strip()
        if not line:
            return
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            self.garbage_lines += 1
            self.first_garbage = self.first_garbage or cap(line, 120)
            return
        self.events += 1
        kind = str(event.get("type"))
        self.event_types.add(kind)
        if isinstance(event.get("session_id"), str):
            self.session_id = event["session_id"]
        if kind == "result":
            self.result = event
        elif kind == "system" and event.get("subtype") == "api_retry":
            self.api_retries += 1
        elif kind == "user":
            self._note_schema_rejection(event)
            for block in _blocks(event, "tool_result"):
                self.tools.answered(block)
        elif kind == "assistant":
            for block in _blocks(event, "tool_use"):
                self.tools.called(block)

    def _note_schema_rejection(self, event: dict[str, Any]) -> None:
        message = event.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            return
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_result" and block.get("is_error"):
                text = block.get("content")
                if isinstance(text, str) and SCHEMA_REJECTION in text:
                    self.last_schema_rejection = text


def _blocks(event: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    message = event.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        return []
    return [b for b in content if isinstance(b, dict) and b.get("type") == kind]


def finish(
    state: StreamState,
    *,
    returncode: int,
    stderr: str,
    expect_structured: bool,
    runner: str,
    duration_s: float,
) -> RunResult:
    """The RunResult of a finished process, or the RunnerError that explains why there is none."""
    result = state.result
    if result is None:
        raise _no_result(state, returncode, stderr)
    stats = RunStats(
        runner=runner,
        duration_s=duration_s,
        cost_usd=_number(result.get("total_cost_usd")),
        turns=_integer(result.get("num_turns")),
        session_id=_text(result.get("session_id")) or state.session_id,
        tool_calls=state.tools.counts(),
    )
    said = _said(result)
    if result.get("is_error") is not False or returncode != 0:
        raise attach_stats(_error_for(state, result, said, returncode), stats)
    text = result.get("result")
    structured = result.get("structured_output")
    if expect_structured and structured is None:
        error = RunnerOutputError(
            f"claude finished without a structured answer; it said: {said or '(nothing)'}"
        )
        raise attach_stats(error, stats)
    return RunResult(structured=structured, text=text if isinstance(text, str) else "", stats=stats)


E = TypeVar("E", bound=Exception)


def attach_stats(error: E, stats: RunStats) -> E:
    """Errors raised after claude reported a result carry its `stats` (cost, turns, session), so a failed
    run still reaches the cost ledger. (bot/errors.py does not declare the attribute yet.)"""
    setattr(error, "stats", stats)  # noqa: B010
    return error


def _said(result: dict[str, Any]) -> str:
    parts: list[str] = []
    if isinstance(result.get("result"), str):
        parts.append(result["result"])
    errors = result.get("errors")
    if isinstance(errors, list):
        parts.extend(str(e) for e in errors)
    return cap("; ".join(p for p in parts if p))


def _error_for(state: StreamState, result: dict[str, Any], said: str, returncode: int) -> RunnerError:
    subtype = str(result.get("subtype") or "")
    status = result.get("api_error_status")
    api_type = str(result.get("api_error_type") or "")
    lowered = said.lower()
    if subtype in _LIMIT_SUBTYPES:
        if subtype == "error_max_turns" and state.last_schema_rejection:
            rejection = cap(state.last_schema_rejection)
            return RunnerOutputError(
                f"claude's answers did not match the schema until it ran out of turns: {rejection}"
            )
        return RunnerLimitReached(f"claude stopped at a configured limit: {said or subtype}")
    if status in _AUTH_STATUS or api_type in _AUTH_TYPES or any(w in lowered for w in _AUTH_WORDS):
        return RunnerAuthError(f"claude could not authenticate: {said or f'HTTP {status}'}")
    if (
        status in _OVERLOAD_STATUS
        or api_type in _OVERLOAD_TYPES
        or any(w in lowered for w in _OVERLOAD_WORDS)
    ):
        return RunnerOverloaded(f"the model API is overloaded or rate-limited: {said or f'HTTP {status}'}")
    if "timed out" in lowered:
        return RunnerTimeout(f"claude's request to the model API timed out: {said}")
    if result.get("is_error") is False:
        return RunnerOutputError(f"claude exited with status {returncode} after a successful result: {said}")
    return RunnerOutputError(f"claude reported an error: {said or subtype or 'no details'}")


def _no_result(state: StreamState, returncode: int, stderr: str) -> RunnerError:
    err = cap(stderr)
    lowered = err.lower()
    if any(w in lowered for w in _AUTH_WORDS):
        return RunnerAuthError(f"claude could not authenticate: {err}")
    if state.events == 0 and state.garbage_lines:
        return RunnerOutputError(
            f"claude's output was not stream-json (exit status {returncode}): {state.first_garbage!r}"
            + (f"; stderr: {err}" if err else "")
        )
    detail = f"; stderr: {err}" if err else ""
    return RunnerOutputError(f"claude exited with status {returncode} without a result line{detail}")


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _integer(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
