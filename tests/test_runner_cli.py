"""The claude runner: the real `claude` binary against the fake Messages API on loopback, plus small stub
binaries for the output shapes the real CLI cannot be made to print."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

import bot.runner.claude_cli as claude_cli
from bot.config import ClaudeConfig
from bot.demo.fake_messages_api import FakeMessagesApi
from bot.diagnose import load_schema
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
from bot.models import RunRequest, RunResult
from bot.runner.claude_cli import ClaudeCliRunner
from bot.runner.stream import StreamState, finish
from tests.conftest import claude_binary
from tests.helpers import until

T = TypeVar("T")

TEST_ENV = {"ANTHROPIC_API_KEY": "test", "CLAUDE_CODE_MAX_RETRIES": "0", "API_TIMEOUT_MS": "5000"}
ANSWER = {
    "summary": "disk full",
    "candidates": [{"title": "t", "rationale": "r", "risk": "low", "kind": "restart"}],
}
SECRET = "sentinel-telegram-token-5f3a"
# For tests that cancel claude while the fake hangs: claude's own request timeout must not end it first,
# even when a loaded machine makes the cancellation late (it did once at 5 s: a flaky test).
CANCEL_ENV = TEST_ENV | {"API_TIMEOUT_MS": "120000"}


def arun(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def group_members(pgid: int) -> list[int]:
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and alive(proc.pid):
                members.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def tree(pid: int) -> list[int]:
    try:
        return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return [pid]


@pytest.fixture
def claude_bin() -> str:
    path = claude_binary()
    if path is None:
        pytest.fail("the claude binary is missing: run `make tools`")
    return path


@pytest.fixture
def fake_api() -> Iterator[FakeMessagesApi]:
    api = FakeMessagesApi(structured=ANSWER, read_path="notes.txt").start()
    yield api
    api.stop()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "notes.txt").write_text("the-file-content-7c1e\n")
    return repo


RunnerFactory = Callable[..., ClaudeCliRunner]


@pytest.fixture
def make_runner(claude_bin: str, fake_api: FakeMessagesApi, tmp_path: Path) -> RunnerFactory:
    def make(
        *, extra_env: dict[str, str] | None = None, base_env: dict[str, str] | None = None, **cfg: Any
    ) -> ClaudeCliRunner:
        settings: dict[str, Any] = {"max_turns": 4, "timeout_s": 30.0, "idle_timeout_s": 15.0} | cfg
        config = ClaudeConfig(binary=claude_bin, base_url=fake_api.url, **settings)
        env = TEST_ENV if extra_env is None else extra_env
        return ClaudeCliRunner(
            config, base_env=base_env, extra_env=env, config_dir=tmp_path / "claude-config"
        )

    return make


def request(workdir: Path, scenario: str, *, schema: str | None = None, **kw: Any) -> RunRequest:
    schema_text = load_schema() if schema is None else schema
    return RunRequest(
        prompt=f"Diagnose this. [[scenario:{scenario}]]", schema=schema_text, cwd=str(workdir), **kw
    )


# --- the real CLI ---------------------------------------------------------------------------------------


@pytest.mark.real_cli
def test_structured_answer_with_stats(
    make_runner: RunnerFactory, fake_api: FakeMessagesApi, workdir: Path
) -> None:
    result = arun(make_runner().run(request(workdir, "structured")))

    assert result.structured == ANSWER
    assert result.stats.runner == "claude-cli"
    assert result.stats.duration_s > 0
    assert result.stats.cost_usd is not None
    assert result.stats.cost_usd > 0
    assert result.stats.turns == 2
    assert result.stats.session_id
    (sent,) = fake_api.message_requests()
    offered = {tool["name"] for tool in sent.body["tools"]}
    assert "StructuredOutput" in offered
    # no scope for healbot's tools: no tool at all, not even claude's own Read
    assert not offered & {"Read", "Grep", "Glob", "Bash", "Edit", "Write", "Agent", "WebFetch"}


@pytest.mark.real_cli
def test_builtin_tools_switch_offers_read_grep_glob(
    make_runner: RunnerFactory, fake_api: FakeMessagesApi, workdir: Path
) -> None:
    arun(make_runner(tools="builtin").run(request(workdir, "structured")))

    (sent,) = fake_api.message_requests()
    offered = {tool["name"] for tool in sent.body["tools"]}
    assert {"Read", "Grep", "Glob", "StructuredOutput"} <= offered
    assert not offered & {"Bash", "Edit", "Write", "Agent", "WebFetch"}


@pytest.mark.real_cli
def test_tool_use_turn_reads_a_file_in_the_repo(
    make_runner: RunnerFactory, fake_api: FakeMessagesApi, workdir: Path
) -> None:
    result = arun(make_runner(tools="builtin").run(request(workdir, "tool_use")))

    assert result.structured == ANSWER
    assert result.stats.turns == 3
    assert result.stats.tool_calls == (("Read", 1),)
    first, second = fake_api.message_requests()
    assert "the-file-content-7c1e" not in first.text()
    assert "the-file-content-7c1e" in second.text()


@pytest.mark.real_cli
def test_reading_outside_the_repo_is_denied(
    make_runner: RunnerFactory, fake_api: FakeMessagesApi, workdir: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside-secret.txt"
    outside.write_text("outside-content-91ab\n")
    prompt = f"Diagnose. [[scenario:tool_use]] [[read:{outside}]]"

    runner = make_runner(tools="builtin")
    result = arun(runner.run(RunRequest(prompt=prompt, schema=load_schema(), cwd=str(workdir))))

    assert result.structured == ANSWER
    _, second = fake_api.message_requests()
    assert "outside-content-91ab" not in second.text()
    assert "denied" in second.text()


@pytest.mark.real_cli
def test_idle_watchdog_kills_the_whole_group(
    make_runner: RunnerFactory, fake_api: FakeMessagesApi, workdir: Path
) -> None:
    # 5 s: the binary must print its first event within it even on a busy machine
    runner = make_runner(idle_timeout_s=5.0, extra_env=CANCEL_ENV)
    seen: list[int] = []

    async def scenario() -> None:
        task = asyncio.create_task(runner.run(request(workdir, "hang")))
        await until(fake_api.message_requests, what="claude's request", timeout=10.0)
        (pid,) = runner.running_pids()
        seen.extend(tree(pid))
        started = time.monotonic()
        with pytest.raises(RunnerTimeout, match="no-output watchdog"):
            await task
        assert time.monotonic() - started < 25  # the 5 s watchdog, not the 30 s wall clock

    arun(scenario())
    assert [pid for pid in seen if alive(pid)] == []
    assert group_members(seen[0]) == []


@pytest.mark.real_cli
def test_wall_clock_limit(make_runner: RunnerFactory, workdir: Path) -> None:
    runner = make_runner(timeout_s=2.0, idle_timeout_s=30.0)
    started = time.monotonic()
    with pytest.raises(RunnerTimeout, match="wall-clock limit of 2s"):
        arun(runner.run(request(workdir, "stall")))
    assert time.monotonic() - started < 6
    assert runner.running_pids() == ()


@pytest.mark.real_cli
@pytest.mark.parametrize(
    ("scenario", "error", "words"),
    [
        ("overloaded", RunnerOverloaded, "529"),
        ("auth", RunnerAuthError, "Invalid API key"),
        ("server_error", RunnerOutputError, "500"),
        ("garbage", RunnerOutputError, "malformed response"),
        ("malformed", RunnerOutputError, "without a structured answer"),
        ("text", RunnerOutputError, "without a structured answer"),
    ],
)
def test_api_failures_map_to_runner_errors(
    make_runner: RunnerFactory, workdir: Path, scenario: str, error: type[RunnerError], words: str
) -> None:
    with pytest.raises(error, match=words) as caught:
        arun(make_runner().run(request(workdir, scenario)))
    assert type(caught.value) is error
    assert "ANTHROPIC_API_KEY" not in str(caught.value)
    assert getattr(caught.value, "stats", None) is not None  # a finished run keeps its cost and turns


@pytest.mark.real_cli
def test_overloaded_is_not_retried_with_retries_off(
    make_runner: RunnerFactory, fake_api: FakeMessagesApi, workdir: Path
) -> None:
    with pytest.raises(RunnerOverloaded):
        arun(make_runner().run(request(workdir, "overloaded")))
    assert len(fake_api.message_requests()) == 1


@pytest.mark.real_cli
def test_no_api_key_is_an_auth_error_without_any_request(
    make_runner: RunnerFactory, fake_api: FakeMessagesApi, workdir: Path
) -> None:
    runner = make_runner(extra_env={k: v for k, v in TEST_ENV.items() if k != "ANTHROPIC_API_KEY"})
    with pytest.raises(RunnerAuthError, match="Not logged in"):
        arun(runner.run(request(workdir, "structured")))
    assert fake_api.message_requests() == ()


@pytest.mark.real_cli
def test_max_turns_is_a_limit(make_runner: RunnerFactory, workdir: Path) -> None:
    with pytest.raises(RunnerLimitReached, match="maximum number of turns") as caught:
        arun(make_runner(max_turns=2, tools="builtin").run(request(workdir, "loop")))
    assert caught.value.stats.turns == 3  # type: ignore[attr-defined]


@pytest.mark.real_cli
def test_budget_is_a_limit_and_keeps_the_cost(make_runner: RunnerFactory, workdir: Path) -> None:
    with pytest.raises(RunnerLimitReached, match="maximum budget") as caught:
        arun(make_runner(max_budget_usd=0.01).run(request(workdir, "budget")))
    assert caught.value.stats.cost_usd > 1  # type: ignore[attr-defined]


@pytest.mark.real_cli
def test_task_cancellation_kills_the_group_and_propagates(
    make_runner: RunnerFactory, fake_api: FakeMessagesApi, workdir: Path
) -> None:
    runner = make_runner(extra_env=CANCEL_ENV)
    seen: list[int] = []

    async def scenario() -> None:
        task = asyncio.create_task(runner.run(request(workdir, "hang")))
        await until(fake_api.message_requests, what="claude's request", timeout=10.0)
        seen.extend(tree(runner.running_pids()[0]))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    arun(scenario())
    assert [pid for pid in seen if alive(pid)] == []
    assert group_members(seen[0]) == []


@pytest.mark.real_cli
def test_cancel_all_raises_runner_cancelled_and_the_environment_is_clean(
    make_runner: RunnerFactory, fake_api: FakeMessagesApi, workdir: Path
) -> None:
    base_env = dict(os.environ) | {"HEALBOT_TELEGRAM_TOKEN": SECRET, "SOME_SERVICE_SECRET": SECRET}
    runner = make_runner(base_env=base_env, extra_env=CANCEL_ENV)
    seen: list[int] = []

    async def scenario() -> None:
        task = asyncio.create_task(runner.run(request(workdir, "hang")))
        await until(fake_api.message_requests, what="claude's request", timeout=10.0)
        (pid,) = runner.running_pids()
        seen.append(pid)
        environ = psutil.Process(pid).environ()
        assert environ["ANTHROPIC_BASE_URL"] == fake_api.url  # the check reads the right process
        assert SECRET not in "\n".join(f"{k}={v}" for k, v in environ.items())
        assert await runner.cancel_all() == 1
        with pytest.raises(RunnerCancelled):
            await task

    arun(scenario())
    assert not alive(seen[0])
    assert all(SECRET not in entry.text() for entry in fake_api.journal())


@pytest.mark.real_cli
@pytest.mark.parametrize(("slots", "expected"), [(1, 1), (2, 2)])
def test_semaphore_bounds_concurrent_runs(
    make_runner: RunnerFactory, fake_api: FakeMessagesApi, workdir: Path, slots: int, expected: int
) -> None:
    # Each answer is held until two requests are in flight (at most 15 s): with two slots they meet at
    # once however far apart a loaded machine starts the two claude processes; with one slot they cannot.
    fake_api.slow_until_in_flight = 2
    fake_api.slow_delay_s = 1.0 if slots == 1 else 15.0
    runner = make_runner(max_concurrent=slots)

    async def both() -> list[RunResult]:
        return await asyncio.gather(*(runner.run(request(workdir, "slow")) for _ in range(2)))

    results = arun(both())
    assert [r.structured for r in results] == [ANSWER, ANSWER]
    assert fake_api.max_in_flight == expected


@pytest.mark.real_cli
def test_resume_continues_a_persisted_session(
    make_runner: RunnerFactory, fake_api: FakeMessagesApi, workdir: Path
) -> None:
    runner = make_runner()
    first = arun(runner.run(request(workdir, "structured", persist_session=True)))
    follow_up = RunRequest(
        prompt="And the second cause?",
        schema=load_schema(),
        cwd=str(workdir),
        resume_session=first.stats.session_id,
    )
    second = arun(runner.run(follow_up))

    assert second.structured == ANSWER
    assert "Diagnose this." in fake_api.message_requests()[-1].text()


# --- without the real CLI -------------------------------------------------------------------------------


def test_missing_binary_is_runner_not_found(tmp_path: Path) -> None:
    for binary in ("claude-does-not-exist-3f1", str(tmp_path / "nope" / "claude")):
        runner = ClaudeCliRunner(ClaudeConfig(binary=binary), base_env={"PATH": str(tmp_path)})
        with pytest.raises(RunnerNotFound, match="not found"):
            arun(runner.run(RunRequest(prompt="x", schema="", cwd=str(tmp_path))))
        assert any("not found" in warning for warning in runner.startup_warnings())


def test_missing_working_directory_is_a_clear_error(tmp_path: Path) -> None:
    stub = write_stub(tmp_path, "print('never runs')")
    runner = ClaudeCliRunner(ClaudeConfig(binary=stub))
    with pytest.raises(RunnerError, match="working directory"):
        arun(runner.run(RunRequest(prompt="x", schema="", cwd=str(tmp_path / "gone"))))


def test_argv_is_read_only_and_follows_the_request(tmp_path: Path) -> None:
    runner = ClaudeCliRunner(ClaudeConfig(model="sonnet", max_turns=3, max_budget_usd=0.5))
    argv = runner.build_argv("claude", RunRequest(prompt="p", schema='{"type":"object"}', cwd="/"))

    def value(flag: str) -> str:
        return argv[argv.index(flag) + 1]

    assert argv[:5] == ["claude", "-p", "--output-format", "stream-json", "--verbose"]
    assert value("--tools") == ""  # no scope for healbot's tools: no tool at all
    assert "--allowedTools" not in argv
    assert value("--permission-mode") == "dontAsk"
    assert value("--max-turns") == "3"
    assert value("--max-budget-usd") == "0.5"
    assert value("--setting-sources") == ""
    assert value("--mcp-config") == '{"mcpServers": {}}'
    assert value("--json-schema") == '{"type":"object"}'
    assert value("--model") == "sonnet"
    assert "--strict-mcp-config" in argv
    assert "--no-session-persistence" in argv
    assert not {"bypassPermissions", "--dangerously-skip-permissions", "--resume"} & set(argv)
    assert "p" not in argv  # the prompt goes on stdin

    resumed = runner.build_argv(
        "claude", RunRequest("p", "", "/", resume_session="abc", system_prompt="be brief")
    )
    assert value_of(resumed, "--resume") == "abc"
    assert value_of(resumed, "--append-system-prompt") == "be brief"
    assert "--no-session-persistence" not in resumed
    assert "--json-schema" not in resumed
    kept = runner.build_argv("claude", RunRequest("p", "", "/", persist_session=True))
    assert "--no-session-persistence" not in kept
    assert "--resume" not in kept


def test_argv_with_healbot_tools_allows_only_them(tmp_path: Path) -> None:
    runner = ClaudeCliRunner(ClaudeConfig())
    config = tmp_path / "mcp.json"
    argv = runner.build_argv("claude", RunRequest("p", "", "/"), mcp_config=config)
    assert value_of(argv, "--tools") == ""
    assert value_of(argv, "--allowedTools") == "mcp__healbot__*"
    assert value_of(argv, "--mcp-config") == str(config)
    assert "--strict-mcp-config" in argv
    assert runner.tools_mode == "healbot"


def test_argv_with_builtin_tools_ignores_the_mcp_config(tmp_path: Path) -> None:
    runner = ClaudeCliRunner(ClaudeConfig(tools="builtin"))
    argv = runner.build_argv("claude", RunRequest("p", "", "/"), mcp_config=tmp_path / "mcp.json")
    assert value_of(argv, "--tools") == "Read,Grep,Glob"
    assert value_of(argv, "--mcp-config") == '{"mcpServers": {}}'
    assert "--allowedTools" not in argv
    assert "unredacted" in runner.tools_in_force()


def value_of(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_environment_is_built_from_scratch(tmp_path: Path) -> None:
    base = {
        "PATH": "/usr/bin",
        "HOME": "/home/op",
        "LANG": "en_US.UTF-8",
        "TMPDIR": "/var/tmp",
        "HEALBOT_TELEGRAM_TOKEN": SECRET,
        "ANTHROPIC_API_KEY": "sk-real",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "HTTPS_PROXY": "http://proxy:3128",
    }
    cfg = ClaudeConfig(base_url="http://127.0.0.1:9", pass_env=("HTTPS_PROXY", "NOT_SET_ANYWHERE"))
    env = ClaudeCliRunner(cfg, base_env=base, extra_env={"X_EXTRA": "1"}, config_dir=tmp_path).build_env()

    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/home/op",
        "LANG": "en_US.UTF-8",
        "LC_ALL": "en_US.UTF-8",
        "TMPDIR": "/var/tmp",
        "CLAUDE_CONFIG_DIR": str(tmp_path),
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_DISABLE_GIT_INSTRUCTIONS": "1",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://proxy:3128",
        "X_EXTRA": "1",
    }


def test_api_key_in_claudes_environment_is_a_loud_warning(tmp_path: Path) -> None:
    stub = write_stub(tmp_path, "")
    base = {"PATH": "/usr/bin", "ANTHROPIC_API_KEY": "sk-real"}
    quiet = ClaudeCliRunner(ClaudeConfig(binary=stub), base_env=base)
    loud = ClaudeCliRunner(ClaudeConfig(binary=stub, pass_env=("ANTHROPIC_API_KEY",)), base_env=base)

    assert quiet.startup_warnings() == []
    (warning,) = loud.startup_warnings()
    assert "ANTHROPIC_API_KEY" in warning
    assert "billed per token" in warning
    assert "sk-real" not in warning


def write_stub(tmp_path: Path, body: str) -> str:
    """A stand-in `claude`: a real executable that prints what a test needs."""
    path = tmp_path / f"stub-{abs(hash(body)) % 10**8}"
    path.write_text(f"#!{sys.executable}\nimport json, os, signal, subprocess, sys, time\n{body}\n")
    path.chmod(0o755)
    return str(path)


def stub_runner(tmp_path: Path, body: str, **cfg: Any) -> ClaudeCliRunner:
    return ClaudeCliRunner(ClaudeConfig(binary=write_stub(tmp_path, body), **cfg))


def stub_run(runner: ClaudeCliRunner, tmp_path: Path, schema: str = "") -> RunResult:
    return arun(runner.run(RunRequest(prompt="p", schema=schema, cwd=str(tmp_path))))


def test_garbage_only_output_is_an_output_error(tmp_path: Path) -> None:
    runner = stub_runner(tmp_path, "print('<html>bad gateway</html>')")
    with pytest.raises(RunnerOutputError, match=r"not stream-json.*bad gateway"):
        stub_run(runner, tmp_path)


def test_no_result_line_is_an_output_error_quoting_stderr(tmp_path: Path) -> None:
    body = "print(json.dumps({'type': 'system', 'subtype': 'init'}))\nprint('boom-41', file=sys.stderr)\nsys.exit(3)"
    with pytest.raises(RunnerOutputError, match="status 3 without a result line; stderr: boom-41"):
        stub_run(stub_runner(tmp_path, body), tmp_path)


def test_success_needs_exit_zero_too(tmp_path: Path) -> None:
    result = {"type": "result", "subtype": "success", "is_error": False, "result": "ok", "num_turns": 1}
    body = f"print('not json, ignored')\nprint(json.dumps({result!r}))\nsys.exit(1)"
    with pytest.raises(RunnerOutputError, match="status 1 after a successful result"):
        stub_run(stub_runner(tmp_path, body), tmp_path)


def test_unknown_events_are_ignored_and_stdin_carries_the_prompt(tmp_path: Path) -> None:
    body = (
        "prompt = sys.stdin.read()\n"
        "print(json.dumps({'type': 'brand_new_event', 'x': 1}))\n"
        "print(json.dumps({'type': 'result', 'subtype': 'success', 'is_error': False, 'result': prompt,"
        " 'structured_output': {'echo': prompt}, 'total_cost_usd': 0.25, 'num_turns': 2, 'session_id': 's1'}))"
    )
    result = stub_run(stub_runner(tmp_path, body), tmp_path, schema='{"type":"object"}')
    assert result.structured == {"echo": "p"}
    assert (result.stats.cost_usd, result.stats.turns, result.stats.session_id) == (0.25, 2, "s1")


def test_timeout_kills_grandchildren_and_escalates_to_sigkill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(claude_cli, "TERMINATE_GRACE_S", 0.3)
    body = (
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        "print(json.dumps({'type': 'system', 'subtype': 'init', 'child': child.pid}), flush=True)\n"
        "time.sleep(60)"
    )
    runner = stub_runner(tmp_path, body, idle_timeout_s=1.0)
    seen: list[int] = []

    async def scenario() -> None:
        task = asyncio.create_task(runner.run(RunRequest(prompt="p", schema="", cwd=str(tmp_path))))
        await until(
            lambda: runner.running_pids() and len(tree(runner.running_pids()[0])) > 1,
            what="the child",
            timeout=10.0,
        )
        seen.extend(tree(runner.running_pids()[0]))
        with pytest.raises(RunnerTimeout):
            await task

    arun(scenario())
    assert len(seen) == 2
    assert [pid for pid in seen if alive(pid)] == []


@pytest.mark.parametrize(
    ("result", "error", "words"),
    [
        (
            {"api_error_status": 403, "result": "Failed to authenticate. API Error: 403"},
            RunnerAuthError,
            "403",
        ),
        ({"result": "Not logged in · Please run /login"}, RunnerAuthError, "Not logged in"),
        ({"api_error_status": 429, "result": "API Error: 429"}, RunnerOverloaded, "429"),
        ({"result": "API Error: Repeated 529 Overloaded errors"}, RunnerOverloaded, "Overloaded"),
        ({"result": "Request timed out. If the API is slow"}, RunnerTimeout, "timed out"),
        ({"subtype": "error_during_execution", "result": None}, RunnerOutputError, "error_during_execution"),
        (
            {"subtype": "error_max_budget_usd", "errors": ["Reached maximum budget ($0.01)"]},
            RunnerLimitReached,
            "budget",
        ),
    ],
)
def test_result_lines_map_to_errors(result: dict[str, Any], error: type[RunnerError], words: str) -> None:
    state = StreamState()
    state.feed(json.dumps({"type": "result", "subtype": "success", "is_error": True} | result))
    with pytest.raises(error, match=words):
        finish(state, returncode=1, stderr="", expect_structured=True, runner="claude-cli", duration_s=0.1)


def test_max_turns_after_schema_rejections_is_an_output_error() -> None:
    state = StreamState()
    rejection = {
        "type": "tool_result",
        "is_error": True,
        "content": "Output does not match required schema: /x",
    }
    state.feed(json.dumps({"type": "user", "message": {"role": "user", "content": [rejection]}}))
    state.feed(
        json.dumps({"type": "result", "subtype": "error_max_turns", "is_error": True, "errors": ["max"]})
    )
    with pytest.raises(RunnerOutputError, match="did not match the schema"):
        finish(state, returncode=1, stderr="", expect_structured=True, runner="claude-cli", duration_s=0.1)


def test_error_text_is_capped() -> None:
    state = StreamState()
    state.feed(json.dumps({"type": "result", "subtype": "success", "is_error": True, "result": "x" * 5000}))
    with pytest.raises(RunnerOutputError) as caught:
        finish(state, returncode=1, stderr="", expect_structured=False, runner="claude-cli", duration_s=0.1)
    assert len(str(caught.value)) < 600


# --- the fake server by itself --------------------------------------------------------------------------


def post(url: str, body: object, path: str = "/v1/messages?beta=true") -> tuple[int, Any]:
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST")
    req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_fake_answers_head_json_errors_and_unknown_paths() -> None:
    calls: list[object] = []

    def answer(body: object) -> object:
        calls.append(body)
        return {"made": "by callable"}

    with FakeMessagesApi(structured=answer) as api:
        head = urllib.request.urlopen(urllib.request.Request(api.url + "/", method="HEAD"), timeout=5)
        assert head.status == 200
        body = {
            "model": "m",
            "stream": False,
            "messages": [{"role": "user", "content": "hi"}, {"role": "system", "content": "env"}],
            "tools": [{"name": "StructuredOutput", "input_schema": {}}],
        }
        status, text = post(api.url, body)
        assert status == 200
        (block,) = json.loads(text)["content"]
        assert block["name"] == "StructuredOutput"
        assert block["input"] == {"made": "by callable"}
        assert calls == [body]

        status, text = post(
            api.url, body | {"messages": [{"role": "user", "content": "[[scenario:overloaded]]"}]}
        )
        assert status == 529
        assert json.loads(text)["error"]["type"] == "overloaded_error"
        status, text = post(api.url, body | {"messages": [{"role": "user", "content": "[[scenario:nope]]"}]})
        assert status == 400
        assert "unknown scenario 'nope'" in text
        assert post(api.url, body, path="/v1/models")[0] == 404
        assert [e.scenario for e in api.message_requests()] == ["structured", "overloaded", "nope"]
        assert api.message_requests()[0].headers["content-type"] == "application/json"
    with pytest.raises(ValueError, match="unknown scenario"):
        FakeMessagesApi(default_scenario="nope")
