"""The supervised `claude -p` runner: read-only tools, a scratch environment, a no-output watchdog, a
wall-clock limit, and the whole process group killed when a run ends early.

Cancellation: when the task awaiting `run()` is cancelled (asyncio), the process group is killed and the
`CancelledError` is re-raised unchanged, so `asyncio.timeout`, `TaskGroup` and shutdown keep working.
When the bot itself stops the runs with `cancel_all()` (shutdown, /pause), each affected `run()` raises
`RunnerCancelled` instead.

Lifetime: claude is started through bot/die_with_parent.py, so it dies with the daemon even on a kill -9.
The fork happens on the event loop's thread (asyncio calls Popen there), which lives as long as the daemon,
as PR_SET_PDEATHSIG needs. With `track_children(registry)` (the daemon does it at start-up) each child is
recorded in the store before it gets its prompt, so it cannot spend anything unrecorded, and forgotten
once it has ended (bot/runner/children.py); at most one claude runs per incident.

Each new run gets its own `--session-id`: known before the start, recorded with the child. A run after a
restart starts afresh rather than resuming the interrupted session: that one ended mid-turn (a tool call
may lack its result), its evidence may be stale, and the prompt is rebuilt from the store anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from bot import die_with_parent as lifeline
from bot.config import ClaudeConfig
from bot.errors import (
    HealbotError,
    RunnerCancelled,
    RunnerError,
    RunnerLimitReached,
    RunnerNotFound,
    RunnerOutputError,
    RunnerTimeout,
)
from bot.mcp_server import launch as mcp_launch
from bot.models import RunRequest, RunResult, RunStats
from bot.runner.children import ChildRegistry, ClaudeBusy
from bot.runner.env import PER_TOKEN_BILLING, build_env, scrubbed_request
from bot.runner.stream import StreamState, attach_stats, finish, tool_cap_problem

log = logging.getLogger(__name__)

READ_ONLY_TOOLS = "Read,Grep,Glob"
BUILTIN_TOOLS = "builtin"
NO_MCP_SERVERS = json.dumps({"mcpServers": {}})
LINE_LIMIT = 32 * 1024 * 1024  # one stream-json line (an assistant message) can be large
STDERR_CAP = 16 * 1024
TERMINATE_GRACE_S = 3.0


INSTALL_HINT = (
    "install Claude Code (`npm install -g @anthropic-ai/claude-code` puts `claude` on every user's PATH; see "
    "https://docs.anthropic.com/en/docs/claude-code/setup) or set [claude] binary to its full path"
)


@dataclass(eq=False, slots=True)
class _ActiveRun:
    process: asyncio.subprocess.Process
    cancelled_by_runner: bool = False


class ClaudeCliRunner:
    """Runs `claude -p` for one RunRequest at a time per semaphore slot (`cfg.max_concurrent`)."""

    name = "claude-cli"

    def __init__(
        self,
        cfg: ClaudeConfig,
        *,
        base_env: Mapping[str, str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        config_dir: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self._base_env = dict(os.environ if base_env is None else base_env)
        self._extra_env = dict(extra_env or {})
        self._config_dir = config_dir
        self._semaphore = asyncio.Semaphore(cfg.max_concurrent)
        self._active: set[_ActiveRun] = set()
        self._children: ChildRegistry | None = None
        self._incidents: set[int] = set()  # incidents with a claude running in this process

    def track_children(self, registry: ChildRegistry | None) -> None:
        """Record every child in the store from now on (None: stop recording)."""
        self._children = registry

    # --- what will be run ----------------------------------------------------------------------------

    def build_env(self) -> dict[str, str]:
        return build_env(
            self.cfg, base_env=self._base_env, extra_env=self._extra_env, config_dir=self._config_dir
        )

    def build_argv(
        self,
        binary: str,
        request: RunRequest,
        *,
        session_id: str | None = None,
        mcp_config: Path | None = None,
    ) -> list[str]:
        """The argv. With `mcp_config` (healbot's tools, the default) claude has no built-in tool at all
        and may call only `mcp__healbot__*`; with `[claude] tools = "builtin"` it reads the repo with its
        own Read/Grep/Glob; with neither it has no tool. `dontAsk` denies whatever is not allowed without
        asking; Read is deliberately not in `--allowedTools`, because a bare `Read` rule allows reading
        any file on the host, while `dontAsk` confines reads to the working directory. `session_id` names
        a new session (not used with `resume_session`)."""
        argv = [binary, "-p", "--output-format", "stream-json", "--verbose"]
        servers = NO_MCP_SERVERS
        if self.cfg.tools == BUILTIN_TOOLS:
            argv += ["--tools", READ_ONLY_TOOLS]
        elif mcp_config is not None:
            argv += ["--tools", "", "--allowedTools", mcp_launch.ALLOWED_TOOLS]
            servers = str(mcp_config)
        else:
            argv += ["--tools", ""]
        argv += ["--permission-mode", "dontAsk"]
        argv += ["--max-turns", str(self.cfg.max_turns), "--max-budget-usd", str(self.cfg.max_budget_usd)]
        argv += ["--setting-sources", "", "--strict-mcp-config", "--mcp-config", servers]
        if request.schema:
            argv += ["--json-schema", request.schema]
        if request.resume_session:
            argv += ["--resume", request.resume_session]
        else:
            if session_id:
                argv += ["--session-id", session_id]
            if not request.persist_session:
                argv.append("--no-session-persistence")
        if self.cfg.model:
            argv += ["--model", self.cfg.model]
        if request.system_prompt:
            argv += ["--append-system-prompt", request.system_prompt]
        return argv

    @property
    def tools_mode(self) -> str:
        """ "builtin" (claude's Read/Grep/Glob) or "healbot" (the MCP tools, when a request has a scope)."""
        return BUILTIN_TOOLS if self.cfg.tools == BUILTIN_TOOLS else "healbot"

    def tools_in_force(self) -> str:
        """For `healbot doctor`: which tools a diagnosis looks through."""
        if self.cfg.tools == BUILTIN_TOOLS:
            return (
                'claude\'s built-in Read/Grep/Glob inside the repo ([claude] tools = "builtin"): files reach '
                "the model unredacted"
            )
        return (
            f"healbot's read-only MCP tools (healbot mcp), at most {self.cfg.max_tool_calls} calls and "
            f"{self.cfg.max_tool_bytes} bytes per diagnosis; every answer redacted"
        )

    def resolve_binary(self) -> str | None:
        binary = self.cfg.binary
        if os.sep in binary:
            return binary if os.path.isfile(binary) and os.access(binary, os.X_OK) else None
        return shutil.which(binary, path=self.build_env().get("PATH"))

    def startup_warnings(self) -> list[str]:
        warnings: list[str] = []
        if self.resolve_binary() is None:
            warnings.append(
                f"The claude binary {self.cfg.binary!r} was not found or is not executable: every diagnosis "
                f"will fail until you {INSTALL_HINT}."
            )
        env = self.build_env()
        for name in PER_TOKEN_BILLING:
            if env.get(name):
                warnings.append(
                    f"WARNING: {name} is passed to claude, so every diagnosis is billed per token to that "
                    "key instead of the operator's subscription login. Remove it from claude.pass_env "
                    "unless that is intended."
                )
        return warnings

    # --- running -------------------------------------------------------------------------------------

    async def run(self, request: RunRequest) -> RunResult:
        request = scrubbed_request(request, self._base_env)
        binary = self.resolve_binary()
        if binary is None:
            raise RunnerNotFound(
                f"the claude binary {self.cfg.binary!r} was not found or is not executable; {INSTALL_HINT}"
            )
        if not os.path.isdir(request.cwd):
            raise RunnerError(f"the working directory {request.cwd!r} for claude does not exist")
        incident = request.incident_id
        if incident is not None and incident in self._incidents:
            raise ClaudeBusy(f"a claude run for #{incident} is in progress already; it was not started twice")
        if incident is not None:
            self._incidents.add(incident)
        try:
            async with self._semaphore:
                return await self._run(binary, request)
        finally:
            if incident is not None:
                self._incidents.discard(incident)

    async def cancel_all(self) -> int:
        """Stop every run in progress; each raises RunnerCancelled. Returns how many were stopped."""
        runs = list(self._active)
        for run in runs:
            run.cancelled_by_runner = True
        await asyncio.gather(*(_terminate_group(run.process) for run in runs))
        return len(runs)

    def running_pids(self) -> tuple[int, ...]:
        return tuple(run.process.pid for run in self._active)

    async def _run(self, binary: str, request: RunRequest) -> RunResult:
        launch = None
        if request.tools is not None and self.cfg.tools != BUILTIN_TOOLS:
            scope = replace(
                request.tools, max_calls=self.cfg.max_tool_calls, max_bytes=self.cfg.max_tool_bytes
            )
            launch = await asyncio.to_thread(mcp_launch.prepare, scope, self._base_env)
        try:
            return await self._run_claude(binary, request, launch)
        finally:
            if launch is not None:
                launch.cleanup()

    async def _run_claude(
        self, binary: str, request: RunRequest, launch: mcp_launch.Launch | None
    ) -> RunResult:
        started = time.monotonic()
        session_id = request.resume_session or str(uuid.uuid4())
        mcp_config = launch.mcp_config if launch is not None else None
        argv = self.build_argv(binary, request, session_id=session_id, mcp_config=mcp_config)
        env = self.build_env()
        try:
            process = await asyncio.create_subprocess_exec(
                *lifeline.command(argv, env=env),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=request.cwd,
                env=env,
                start_new_session=True,
                limit=LINE_LIMIT,
            )
        except (FileNotFoundError, PermissionError) as exc:
            raise RunnerNotFound(
                f"the claude binary {binary!r} could not be started: {exc.strerror}"
            ) from None
        run = _ActiveRun(process)
        self._active.add(run)
        try:  # before the prompt: claude sends nothing until its stdin closes
            row = self._record(process.pid, argv, request, session_id)
        except BaseException:
            self._active.discard(run)
            await _terminate_group(process)
            raise
        state = StreamState()
        stdin_task = asyncio.create_task(_feed_stdin(process, request.prompt))
        stderr_task = asyncio.create_task(_read_capped(process.stderr))
        try:
            returncode = await self._supervise(process, state, started)
        except BaseException:
            await _terminate_group(process)
            if run.cancelled_by_runner:
                raise RunnerCancelled("the claude run was cancelled by the bot") from None
            raise
        finally:
            self._active.discard(run)
            _signal_group(process.pid, signal.SIGKILL)  # anything the run left behind in its group
            self._forget(row, process)
            stdin_task.cancel()
            stderr = await _finish_task(stderr_task)
        if run.cancelled_by_runner:
            raise RunnerCancelled("the claude run was cancelled by the bot")
        duration = time.monotonic() - started
        log.info("claude run ended: exit %s after %.2fs, %d events", returncode, duration, state.events)
        return finish(
            state,
            returncode=returncode,
            stderr=stderr,
            expect_structured=bool(request.schema),
            runner=self.name,
            duration_s=duration,
        )

    def _record(self, pid: int, argv: list[str], request: RunRequest, session_id: str) -> int | None:
        if self._children is None:
            return None
        return self._children.record(
            pid, tuple(argv), incident_id=request.incident_id, session_id=session_id, at=time.time()
        )

    def _forget(self, row: int | None, process: asyncio.subprocess.Process) -> None:
        """Forget the child's row once it has ended; one still running keeps it for the next start."""
        if row is None or self._children is None or process.returncode is None:
            return
        try:
            self._children.forget(row)
        except HealbotError as exc:
            log.warning("the ended claude (pid %d) is still recorded: %s", process.pid, exc)

    async def _supervise(
        self, process: asyncio.subprocess.Process, state: StreamState, started: float
    ) -> int:
        """Read stdout until EOF under both clocks; then wait for the exit status."""
        assert process.stdout is not None
        idle_s, wall_s = self.cfg.idle_timeout_s, self.cfg.timeout_s
        deadline = started + wall_s
        while True:
            wall_left = deadline - time.monotonic()
            wait_s = min(idle_s, wall_left)
            if wait_s <= 0:
                raise RunnerTimeout(f"claude ran longer than the wall-clock limit of {wall_s:g}s")
            try:
                line = await asyncio.wait_for(process.stdout.readline(), wait_s)
            except TimeoutError:
                if wall_left <= idle_s:
                    raise RunnerTimeout(
                        f"claude ran longer than the wall-clock limit of {wall_s:g}s"
                    ) from None
                raise RunnerTimeout(f"claude printed nothing for {idle_s:g}s (no-output watchdog)") from None
            except ValueError:  # a line beyond LINE_LIMIT
                raise RunnerOutputError(f"claude printed a line longer than {LINE_LIMIT} bytes") from None
            if not line:
                break
            state.feed(line)
            self._check_tool_caps(state, started)
        wall_left = max(deadline - time.monotonic(), 0.1)
        try:
            return await asyncio.wait_for(process.wait(), min(wall_left, idle_s))
        except TimeoutError:
            raise RunnerTimeout("claude closed its output but did not exit") from None

    def _check_tool_caps(self, state: StreamState, started: float) -> None:
        """A diagnosis that looks at more than its caps is ended, with a note saying which cap."""
        tools = state.tools
        problem = tool_cap_problem(
            tools, max_calls=self.cfg.max_tool_calls, max_bytes=self.cfg.max_tool_bytes
        )
        if problem is None:
            return
        stats = RunStats(
            self.name,
            time.monotonic() - started,
            session_id=state.session_id,
            tool_calls=tools.counts(),
        )
        raise attach_stats(RunnerLimitReached(problem), stats)


async def _feed_stdin(process: asyncio.subprocess.Process, prompt: str) -> None:
    stdin = process.stdin
    assert stdin is not None
    try:
        stdin.write(prompt.encode())
        await stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # claude exited before reading it all; its exit status says why
    finally:
        stdin.close()


async def _read_capped(stream: asyncio.StreamReader | None) -> str:
    """Read to EOF, keeping the last STDERR_CAP bytes."""
    if stream is None:
        return ""
    tail = b""
    while chunk := await stream.read(65536):
        tail = (tail + chunk)[-STDERR_CAP:]
    return tail.decode("utf-8", "replace")


async def _finish_task(task: asyncio.Task[str]) -> str:
    try:
        return await asyncio.wait_for(task, 1.0)
    except (TimeoutError, OSError):
        return ""


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _terminate_group(process: asyncio.subprocess.Process) -> None:
    """SIGTERM the group, give it TERMINATE_GRACE_S, then SIGKILL whatever is left of it."""
    if process.returncode is None:
        _signal_group(process.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), TERMINATE_GRACE_S)
    except TimeoutError:
        pass
    finally:
        _signal_group(process.pid, signal.SIGKILL)
    if process.returncode is None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), TERMINATE_GRACE_S)
