"""The Messages-API runner: the official `anthropic` SDK against any base URL and key (Anthropic, a gateway,
a company proxy), with the same caps as the CLI runner and the same tools: a request with a tool scope
gets healbot's read-only MCP tools (bot/runner/api_tools.py) through the API's tool use, and its turns
run until the model answers (max_turns, max_tool_calls, max_tool_bytes, max_budget_usd bound them).

The evidence is also in the prompt (bot/evidence.py puts code context and commits there), so without
tools the model only answers. A schema-bound answer is obtained by offering exactly one tool whose input schema is the
answer schema and forcing the model to call it; the tool is never executed, its input *is* the answer.

Caps: `max_tokens` per answer, `claude.max_budget_usd` (estimated from the reported usage and a price
table; a prompt that alone would exceed it is never sent), `claude.timeout_s` wall clock over all attempts,
and `claude.idle_timeout_s` as the read timeout, so a stream that goes quiet is a no-output watchdog.
429, 529, other 5xx and dropped connections are retried with exponential backoff (honouring
`retry-after`); every other failure is translated into the RunnerError tree at this boundary.

The SDK is imported only when this runner is built: importing it costs tens of MB of RSS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.config import ClaudeConfig
from bot.errors import (
    RunnerAuthError,
    RunnerCancelled,
    RunnerError,
    RunnerLimitReached,
    RunnerNotFound,
    RunnerOutputError,
    RunnerOverloaded,
    RunnerTimeout,
)
from bot.models import RunRequest, RunResult, RunStats
from bot.redact import redact_env_values
from bot.runner.api_tools import ApiTools
from bot.runner.env import scrubbed_request
from bot.runner.schema_check import schema_problem
from bot.runner.stream import ToolLedger, attach_stats, cap, tool_cap_problem

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic
    from anthropic.types import RawMessageStreamEvent

log = logging.getLogger(__name__)

API_KEY_ENV = "ANTHROPIC_API_KEY"
AUTH_TOKEN_ENV = "ANTHROPIC_AUTH_TOKEN"  # noqa: S105 (a variable name, not a secret)
DEFAULT_MODEL = "claude-sonnet-4-6"
DEFAULT_MAX_TOKENS = 8192
ANSWER_TOOL = "StructuredOutput"  # the name the CLI gives the same tool
CONNECT_TIMEOUT_S = 10.0
MAX_SESSIONS = 32  # conversations kept in memory for follow-ups (`resume_session`)
INSTALL_HINT = "pip install 'healbot[api]'"
# An answer is a few KB of JSON; past this it is cut off as it arrives, so a runaway answer can neither
# hold the loop nor fill memory (the SDK's own accumulator re-parses partial tool JSON at every delta).
MAX_ANSWER_BYTES = 1024 * 1024

# USD per million tokens (input, output), by model family; unknown models use the highest.
PRICES: Mapping[str, tuple[float, float]] = {
    "haiku": (1.0, 5.0),
    "sonnet": (3.0, 15.0),
    "opus": (15.0, 75.0),
}
_FALLBACK_PRICE = PRICES["opus"]

_RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
_AUTH_STATUS = frozenset({401, 403})

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts after the first, and the backoff between them: base × 2^n, capped."""

    max_retries: int = 4
    backoff_s: float = 1.0
    backoff_cap_s: float = 30.0

    def delay(self, attempt: int, retry_after_s: float | None) -> float:
        backoff = min(self.backoff_cap_s, self.backoff_s * float(2**attempt))
        if retry_after_s is not None:
            return min(self.backoff_cap_s, max(retry_after_s, backoff))
        return backoff


def price_for(model: str) -> tuple[float, float]:
    lowered = model.lower()
    for family, price in PRICES.items():
        if family in lowered:
            return price
    return _FALLBACK_PRICE


def estimate_cost(model: str, input_tokens: int, output_tokens: int) -> float:
    price_in, price_out = price_for(model)
    return (input_tokens * price_in + output_tokens * price_out) / 1_000_000


def estimate_prompt_tokens(text: str) -> int:
    """A deliberately low estimate (about 4 characters per token) used only to refuse hopeless prompts."""
    return len(text) // 4


@dataclass(slots=True)
class _Block:
    type: str  # "text" or "tool_use"; other kinds are kept but say nothing
    name: str = ""
    id: str = ""
    parts: list[str] = field(default_factory=list)

    def joined(self) -> str:
        return "".join(self.parts)

    def said(self) -> str:
        return self.joined() if self.type in {"text", "tool_use"} else ""


@dataclass(slots=True)
class _Answer:
    """A streamed answer accumulated from raw events: deltas are appended, tool JSON parsed once at the end."""

    blocks: list[_Block] = field(default_factory=list)
    stop_reason: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    size: int = 0  # bytes of text and tool JSON received so far

    def add(self, event: RawMessageStreamEvent) -> None:
        if event.type == "message_start":
            self.input_tokens = event.message.usage.input_tokens
            self.output_tokens = event.message.usage.output_tokens
        elif event.type == "content_block_start":
            block = event.content_block
            self.blocks.append(_Block(block.type, getattr(block, "name", ""), getattr(block, "id", "")))
        elif event.type == "content_block_delta" and 0 <= event.index < len(self.blocks):
            delta = event.delta
            piece = delta.text if delta.type == "text_delta" else getattr(delta, "partial_json", "")
            if piece:
                self.blocks[event.index].parts.append(piece)
                self.size += len(piece.encode("utf-8"))
        elif event.type == "message_delta":
            self.stop_reason = event.delta.stop_reason
            self.output_tokens = event.usage.output_tokens

    def text(self) -> str:
        return "".join(block.joined() for block in self.blocks if block.type == "text")

    def content(self) -> list[dict[str, Any]]:
        """The answer as the assistant turn of the next request (text and tool_use blocks)."""
        blocks: list[dict[str, Any]] = []
        for block in self.blocks:
            if block.type == "text" and block.joined():
                blocks.append({"type": "text", "text": block.joined()})
            elif block.type == "tool_use":
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": block.id,
                        "name": block.name,
                        "input": _json_object(block.joined()),
                    }
                )
        return blocks

    def tool_calls(self) -> list[_Block]:
        return [block for block in self.blocks if block.type == "tool_use" and block.name != ANSWER_TOOL]

    def tool_input(self, name: str) -> object:
        """The parsed input of the last call of tool `name`, None when there is none (ValueError: not JSON)."""
        found: object = None
        for block in self.blocks:
            if block.type == "tool_use" and block.name == name:
                found = json.loads(block.joined() or "{}")
        return found


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class _Transient(Exception):
    """One attempt failed in a way worth retrying; `error` is what to raise when retries run out."""

    def __init__(self, error: RunnerError, retry_after_s: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after_s = retry_after_s


class MessagesApiRunner:
    """A Runner on the Messages API. `max_concurrent` runs at a time; no tools; same RunResult shape."""

    name = "messages-api"

    def __init__(
        self,
        cfg: ClaudeConfig,
        *,
        environ: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.cfg = cfg
        self.model = cfg.model or DEFAULT_MODEL
        self.retry = retry or RetryPolicy()
        self.max_tokens = max_tokens
        self._environ = dict(os.environ if environ is None else environ)
        self._sleep = sleep
        self._semaphore = asyncio.Semaphore(cfg.max_concurrent)
        self._client: AsyncAnthropic | None = None
        self._sessions: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self._active: set[asyncio.Task[Any]] = set()
        self._cancelled_by_runner: set[asyncio.Task[Any]] = set()

    # --- setup ---------------------------------------------------------------------------------------

    def _credentials(self) -> tuple[str | None, str | None]:
        return self._environ.get(API_KEY_ENV) or None, self._environ.get(AUTH_TOKEN_ENV) or None

    def client(self) -> AsyncAnthropic:
        if self._client is None:
            try:
                import anthropic
            except ImportError:
                raise RunnerNotFound(
                    f'claude.runner = "api" needs the anthropic SDK, which is not installed: {INSTALL_HINT}'
                ) from None
            api_key, auth_token = self._credentials()
            if api_key is None and auth_token is None:
                raise RunnerAuthError(
                    f"the Messages-API runner needs {API_KEY_ENV} (or {AUTH_TOKEN_ENV}) in the environment"
                )
            self._client = anthropic.AsyncAnthropic(
                api_key=api_key,
                auth_token=auth_token,
                base_url=self.cfg.base_url,
                max_retries=0,  # retries are ours: counted, logged and bounded by the wall clock
                timeout=anthropic.Timeout(
                    self.cfg.timeout_s, connect=CONNECT_TIMEOUT_S, read=self.cfg.idle_timeout_s
                ),
            )
        return self._client

    def startup_warnings(self) -> list[str]:
        warnings: list[str] = []
        try:
            import anthropic  # noqa: F401
        except ImportError:
            warnings.append(f"the anthropic SDK is not installed; every diagnosis will fail: {INSTALL_HINT}")
        if self._credentials() == (None, None):
            warnings.append(
                f"{API_KEY_ENV} is not set: the Messages-API runner cannot authenticate. It bills per token "
                "to that key (or to whatever the gateway at claude.base_url charges)."
            )
        return warnings

    def describe_billing(self) -> str:
        where = self.cfg.base_url or "api.anthropic.com"
        return f"Messages API at {where} with {API_KEY_ENV}: billed per token ({self.model})"

    # --- running -------------------------------------------------------------------------------------

    async def run(self, request: RunRequest) -> RunResult:
        request = scrubbed_request(request)  # the one redaction step, at the boundary
        client = self.client()
        system, messages = self._conversation(request)
        if request.system_prompt:
            system = f"{system}\n\n{request.system_prompt}" if system else request.system_prompt
        estimate = estimate_cost(self.model, estimate_prompt_tokens(system + request.prompt), 0)
        if estimate > self.cfg.max_budget_usd:
            raise RunnerLimitReached(
                f"the prompt alone would cost about ${estimate:.2f}, over claude.max_budget_usd "
                f"${self.cfg.max_budget_usd:g}; not sent"
            )
        task = asyncio.current_task()
        async with self._semaphore:
            if task is not None:
                self._active.add(task)
            started = time.monotonic()
            ledger = ToolLedger()
            turns = 1
            try:
                async with asyncio.timeout(self.cfg.timeout_s):
                    if request.tools is None or self.cfg.tools == "builtin":
                        message, attempts = await self._with_retries(client, request, system, messages)
                    else:
                        async with ApiTools(
                            request.tools,
                            max_calls=self.cfg.max_tool_calls,
                            max_bytes=self.cfg.max_tool_bytes,
                            environ=self._environ,
                        ) as tools:
                            message, attempts, turns = await self._converse(
                                client, request, system, messages, tools, ledger, started
                            )
            except TimeoutError:
                raise RunnerTimeout(
                    f"the Messages API ran longer than the wall-clock limit of {self.cfg.timeout_s:g}s"
                ) from None
            except asyncio.CancelledError:
                if task is not None and task in self._cancelled_by_runner:
                    self._cancelled_by_runner.discard(task)
                    with contextlib.suppress(AttributeError):
                        task.uncancel()
                    raise RunnerCancelled("the Messages-API run was cancelled by the bot") from None
                raise
            finally:
                if task is not None:
                    self._active.discard(task)
        duration = time.monotonic() - started
        return self._result(request, messages, message, attempts, duration, turns=turns, ledger=ledger)

    async def cancel_all(self) -> int:
        """Stop every run in progress; each raises RunnerCancelled. Returns how many were stopped."""
        tasks = [t for t in self._active if not t.done()]
        for task in tasks:
            self._cancelled_by_runner.add(task)
            task.cancel()
        return len(tasks)

    def _conversation(self, request: RunRequest) -> tuple[str, list[dict[str, Any]]]:
        history: list[dict[str, Any]] = []
        if request.resume_session:
            previous = self._sessions.get(request.resume_session)
            if previous is None:
                raise RunnerError(
                    f"no conversation {request.resume_session!r} is kept (the bot restarted, or it is older "
                    f"than the last {MAX_SESSIONS}); ask a new question instead"
                )
            history = list(previous)
        return "", [*history, {"role": "user", "content": request.prompt}]

    @property
    def tools_mode(self) -> str:
        """ "healbot" (the MCP tools, when a request has a scope) or "none" (`tools = "builtin"`: this
        runner has no built-in tools)."""
        return "none" if self.cfg.tools == "builtin" else "healbot"

    async def _converse(
        self,
        client: AsyncAnthropic,
        request: RunRequest,
        system: str,
        messages: list[dict[str, Any]],
        tools: ApiTools,
        ledger: ToolLedger,
        started: float,
    ) -> tuple[_Answer, int, int]:
        """Turns until the model gives the answer: each turn's calls of healbot's tools are answered by
        the server and sent back as tool results. Tokens are summed over the turns."""
        conversation = list(messages)
        attempts = input_tokens = output_tokens = 0
        for turn in range(1, self.cfg.max_turns + 1):
            params = self._request_params(request, system, conversation, extra_tools=tools.offered)
            answer, tried = await self._retrying(client, params)
            attempts += tried
            input_tokens += answer.input_tokens
            output_tokens += answer.output_tokens
            answer.input_tokens, answer.output_tokens = input_tokens, output_tokens
            calls = answer.tool_calls()
            answered = any(b.type == "tool_use" and b.name == ANSWER_TOOL for b in answer.blocks)
            if not calls or answered or answer.stop_reason != "tool_use":
                return answer, attempts, turn
            if estimate_cost(self.model, input_tokens, output_tokens) > self.cfg.max_budget_usd:
                return answer, attempts, turn  # _result reports the budget
            results = []
            for block in calls:
                arguments = _json_object(block.joined())
                ledger.called({"id": block.id, "name": block.name, "input": arguments})
                self._check_caps(ledger, started, turn)
                if tools.owns(block.name):
                    text, is_error = await tools.call(block.name, arguments)
                    text = redact_env_values(text, self._environ).text  # the server cannot know these
                else:
                    text, is_error = f"no such tool: {block.name}", True
                ledger.answered({"tool_use_id": block.id, "content": text, "is_error": is_error})
                results.append(
                    {"type": "tool_result", "tool_use_id": block.id, "content": text, "is_error": is_error}
                )
            self._check_caps(ledger, started, turn)
            conversation += [
                {"role": "assistant", "content": answer.content()},
                {"role": "user", "content": results},
            ]
        stats = RunStats(
            self.name, time.monotonic() - started, turns=self.cfg.max_turns, tool_calls=ledger.counts()
        )
        raise attach_stats(
            RunnerLimitReached(f"the model did not answer within max_turns ({self.cfg.max_turns})"), stats
        )

    def _check_caps(self, ledger: ToolLedger, started: float, turn: int) -> None:
        problem = tool_cap_problem(
            ledger, max_calls=self.cfg.max_tool_calls, max_bytes=self.cfg.max_tool_bytes
        )
        if problem is not None:
            stats = RunStats(self.name, time.monotonic() - started, turns=turn, tool_calls=ledger.counts())
            raise attach_stats(RunnerLimitReached(problem), stats)

    def _request_params(
        self,
        request: RunRequest,
        system: str,
        messages: list[dict[str, Any]],
        *,
        extra_tools: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens, "messages": messages}
        if system:
            params["system"] = system
        if request.schema:
            try:
                schema = json.loads(request.schema)
            except ValueError as exc:
                raise RunnerError(f"the answer schema is not valid JSON: {exc}") from None
            params["tools"] = [
                {
                    "name": ANSWER_TOOL,
                    "description": "Give the answer. Call this exactly once with the complete answer.",
                    "input_schema": schema,
                }
            ]
            params["tool_choice"] = {"type": "tool", "name": ANSWER_TOOL}
        if extra_tools:
            params["tools"] = [*params.get("tools", []), *extra_tools]
            params["tool_choice"] = {"type": "any"}  # look through the tools, or answer
        return params

    async def _with_retries(
        self, client: AsyncAnthropic, request: RunRequest, system: str, messages: list[dict[str, Any]]
    ) -> tuple[_Answer, int]:
        return await self._retrying(client, self._request_params(request, system, messages))

    async def _retrying(self, client: AsyncAnthropic, params: dict[str, Any]) -> tuple[_Answer, int]:
        attempt = 0
        while True:
            try:
                return await self._attempt(client, params), attempt + 1
            except _Transient as transient:
                if attempt >= self.retry.max_retries:
                    raise transient.error from None
                delay = self.retry.delay(attempt, transient.retry_after_s)
                log.warning(
                    "Messages API attempt %d failed (%s); retrying in %.2fs", attempt + 1, transient, delay
                )
                attempt += 1
                await self._sleep(delay)

    async def _attempt(self, client: AsyncAnthropic, params: dict[str, Any]) -> _Answer:
        import anthropic

        try:
            stream = await client.messages.create(**params, stream=True)
            async with stream:
                answer = _Answer()
                async for event in stream:
                    answer.add(event)
                    if answer.size > MAX_ANSWER_BYTES:
                        raise RunnerOutputError(
                            f"the Messages API answer passed {MAX_ANSWER_BYTES // 1024} KB and was cut off there; "
                            "an answer that size is not a diagnosis"
                        )
        except RunnerError:
            raise
        except anthropic.APIStatusError as exc:
            raise _translate_status(exc) from None
        except anthropic.APITimeoutError:
            raise RunnerTimeout(
                f"the Messages API sent nothing for {self.cfg.idle_timeout_s:g}s (no-output watchdog)"
            ) from None
        except anthropic.APIConnectionError as exc:
            raise _Transient(RunnerError(f"the connection to the Messages API failed: {exc}")) from None
        except anthropic.AnthropicError as exc:
            raise _Transient(
                RunnerOutputError(f"the Messages API stream broke off: {cap(str(exc))}")
            ) from None
        except Exception as exc:  # the transport below the SDK, or an answer that is not an event stream
            if _is_transport_timeout(exc):
                raise RunnerTimeout(
                    f"the Messages API sent nothing for {self.cfg.idle_timeout_s:g}s (no-output watchdog)"
                ) from None
            if isinstance(exc, OSError) or _is_transport_error(exc):
                raise _Transient(
                    RunnerOutputError(f"the Messages API stream stopped halfway: {_describe(exc)}")
                ) from None
            raise RunnerOutputError(f"the Messages API answer could not be read: {_describe(exc)}") from None
        if answer.stop_reason is None:
            raise _Transient(RunnerOutputError("the Messages API stream stopped halfway (no stop reason)"))
        return answer

    # --- the answer ----------------------------------------------------------------------------------

    def _result(
        self,
        request: RunRequest,
        messages: list[dict[str, Any]],
        message: _Answer,
        attempts: int,
        duration_s: float,
        *,
        turns: int = 1,
        ledger: ToolLedger | None = None,
    ) -> RunResult:
        cost = estimate_cost(self.model, message.input_tokens, message.output_tokens)
        session_id = request.resume_session or f"api-{uuid.uuid4().hex[:16]}"
        stats = RunStats(
            runner=self.name,
            duration_s=duration_s,
            cost_usd=cost,
            turns=turns,
            session_id=session_id,
            tool_calls=ledger.counts() if ledger is not None else (),
        )
        log.info(
            "Messages API answered in %.2fs after %d attempt(s): %d in / %d out tokens, about $%.4f",
            duration_s,
            attempts,
            message.input_tokens,
            message.output_tokens,
            cost,
        )
        if cost > self.cfg.max_budget_usd:
            raise attach_stats(
                RunnerLimitReached(
                    f"the answer cost about ${cost:.2f}, over claude.max_budget_usd ${self.cfg.max_budget_usd:g}"
                ),
                stats,
            )
        if message.stop_reason == "max_tokens":
            raise attach_stats(
                RunnerLimitReached(f"the answer was cut at the max_tokens limit of {self.max_tokens}"), stats
            )
        text = message.text()
        try:
            structured = message.tool_input(ANSWER_TOOL)
        except ValueError as exc:
            raise attach_stats(
                RunnerOutputError(f"the structured answer is not JSON: {cap(str(exc))}"), stats
            ) from None
        if request.schema and structured is None:
            error = RunnerOutputError(
                f"the model finished without a structured answer; it said: {cap(text) or '(nothing)'}"
            )
            raise attach_stats(error, stats)
        if request.schema and (problem := schema_problem(structured, json.loads(request.schema))) is not None:
            raise attach_stats(RunnerOutputError(f"the answer does not match the schema: {problem}"), stats)
        if request.persist_session or request.resume_session:
            self._remember(session_id, messages, message)
        return RunResult(structured=structured, text=text, stats=stats)

    def _remember(self, session_id: str, messages: list[dict[str, Any]], message: _Answer) -> None:
        """Keep the turn for a follow-up. The forced tool call is replayed as text: the next request
        offers no tools, and the API rejects a tool_use without its tool_result."""
        said = [block.said() for block in message.blocks]
        self._sessions[session_id] = [
            *messages,
            {"role": "assistant", "content": "\n".join(said) or "(no answer)"},
        ]
        self._sessions.move_to_end(session_id)
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)


_TRANSPORT_MODULES = frozenset({"httpx", "httpx2", "httpcore", "h11", "anyio"})


def _is_transport_error(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] in _TRANSPORT_MODULES


def _is_transport_timeout(exc: BaseException) -> bool:
    return _is_transport_error(exc) and any(cls.__name__ == "TimeoutException" for cls in type(exc).__mro__)


def _describe(exc: BaseException) -> str:
    said = cap(str(exc))
    return f"{type(exc).__name__}: {said}" if said else type(exc).__name__


def _retry_after(exc: Any) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    raw = headers.get("retry-after")
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def _translate_status(exc: Any) -> Exception:
    status = int(getattr(exc, "status_code", 0))
    said = cap(str(getattr(exc, "message", "") or exc))
    if status in _AUTH_STATUS:
        return RunnerAuthError(f"the Messages API refused the key (HTTP {status}): {said}")
    if status in {429, 529}:
        return _Transient(
            RunnerOverloaded(f"the Messages API is overloaded or rate-limited (HTTP {status}): {said}"),
            _retry_after(exc),
        )
    if status in _RETRY_STATUS:
        return _Transient(RunnerError(f"the Messages API failed (HTTP {status}): {said}"), _retry_after(exc))
    return RunnerOutputError(f"the Messages API rejected the request (HTTP {status}): {said}")
