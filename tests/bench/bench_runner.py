"""Runner overhead: one diagnosis through ClaudeCliRunner against the bare `claude -p` with the same
argv, environment, prompt and working directory, both against the same fake Messages API; and the same
diagnosis with healbot's MCP tools, whose server claude starts (and waits for) before its first request."""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import subprocess
import time
from pathlib import Path

from bot.config import ClaudeConfig
from bot.demo.fake_messages_api import FakeMessagesApi
from bot.diagnose import load_schema
from bot.mcp_server.scope import IncidentFacts, ToolScope
from bot.models import RunRequest
from bot.runner.claude_cli import ClaudeCliRunner
from tests.conftest import claude_binary

ROUNDS = 10


def run(workdir: Path, rounds: int = ROUNDS) -> None:
    binary = claude_binary()
    if binary is None:
        print("NOT MEASURED: runner overhead (the claude binary is missing: run `make tools`)\n")
        return
    repo = workdir / "repo"
    repo.mkdir()
    (repo / "README.md").write_text("shop service\n")
    with FakeMessagesApi() as api:
        config = ClaudeConfig(binary=binary, base_url=api.url, pass_env=("ANTHROPIC_API_KEY",))
        runner = ClaudeCliRunner(
            config, extra_env={"ANTHROPIC_API_KEY": "test", "CLAUDE_CODE_MAX_RETRIES": "0"}
        )
        request = RunRequest(
            prompt="Diagnose this KeyError. [[scenario:structured]]", schema=load_schema(), cwd=str(repo)
        )
        argv, env = runner.build_argv(binary, request), runner.build_env()
        facts = IncidentFacts(1, "fp", "KeyError: 'pear'", 3, time.time() - 60, time.time(), ("KeyError",))
        with_tools = dataclasses.replace(
            request, tools=ToolScope(service="shop", repo=str(repo), incident=facts)
        )

        def bare() -> float:
            started = time.perf_counter()
            done = subprocess.run(
                argv, input=request.prompt.encode(), cwd=repo, env=env, capture_output=True,
                timeout=120, start_new_session=True, check=False,
            )  # fmt: skip
            elapsed = time.perf_counter() - started
            if done.returncode != 0:
                raise RuntimeError(f"bare claude -p failed ({done.returncode}): {done.stderr[-500:]!r}")
            return elapsed

        loop = asyncio.new_event_loop()  # one loop for every run, as in the daemon

        def through_runner() -> float:
            started = time.perf_counter()
            loop.run_until_complete(runner.run(request))
            return time.perf_counter() - started

        def through_runner_with_tools() -> float:
            started = time.perf_counter()
            loop.run_until_complete(runner.run(with_tools))
            return time.perf_counter() - started

        async def plain_asyncio() -> None:
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                cwd=repo, env=env, start_new_session=True,
            )  # fmt: skip
            await process.communicate(request.prompt.encode())

        def through_asyncio() -> float:
            started = time.perf_counter()
            loop.run_until_complete(plain_asyncio())
            return time.perf_counter() - started

        bare()  # warm the page cache for both
        bare_s: list[float] = []
        asyncio_s: list[float] = []
        runner_s: list[float] = []
        tools_s: list[float] = []
        for _ in range(rounds):  # interleaved, so drift on the machine hits all alike
            bare_s.append(bare())
            asyncio_s.append(through_asyncio())
            runner_s.append(through_runner())
            tools_s.append(through_runner_with_tools())
        loop.close()
    b, a, r = statistics.median(bare_s), statistics.median(asyncio_s), statistics.median(runner_s)
    t = statistics.median(tools_s)
    extra = 100 * (r / b - 1)
    spread = 100 * (max(bare_s) - min(bare_s)) / b
    print(f"runner overhead: one structured diagnosis, median of {rounds} interleaved runs each")
    print(f"  bare claude -p        {b * 1000:6.0f} ms   reference (run-to-run spread {spread:.0f} %)")
    print(f"  asyncio subprocess    {a * 1000:6.0f} ms   ratio {a / b:.3f} (the same argv, no supervision)")
    print(
        f"  ClaudeCliRunner       {r * 1000:6.0f} ms   ratio {r / b:.3f} ({extra:+.1f} % wall time; "
        f"target <= 5 %, {'met' if extra <= 5 else 'NOT met'})"
    )
    print(
        f"  + healbot mcp server  {t * 1000:6.0f} ms   ratio {t / b:.3f} ({(t - r) * 1000:+.0f} ms per diagnosis "
        "for starting the tools' server, no tool called)\n"
    )
