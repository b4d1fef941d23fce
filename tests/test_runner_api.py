"""The Messages-API runner: the REAL anthropic SDK against the fake Messages API on 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.config import ClaudeConfig, parse_config
from bot.daemon import build_runner
from bot.demo.fake_messages_api import FakeMessagesApi
from bot.diagnose import diagnose, load_schema
from bot.errors import (
    RunnerAuthError,
    RunnerCancelled,
    RunnerError,
    RunnerLimitReached,
    RunnerOutputError,
    RunnerOverloaded,
    RunnerTimeout,
)
from bot.models import CodeContext, Evidence, FixKind, RunRequest
from bot.runner.claude_cli import ClaudeCliRunner
from bot.runner.messages_api import ANSWER_TOOL, MessagesApiRunner, RetryPolicy, estimate_cost
from bot.runner.schema_check import schema_problem
from tests.helpers import until

KEY = "sk-ant-test-key-0123456789"
TELEGRAM_TOKEN = "123456:telegram-secret-never-sent"
BACKOFF = RetryPolicy(max_retries=2, backoff_s=0.1, backoff_cap_s=1.0)


@pytest.fixture
def fake_api() -> Iterator[FakeMessagesApi]:
    with FakeMessagesApi(slow_delay_s=1.0) as api:
        yield api


def make_runner(
    api: FakeMessagesApi,
    *,
    retry: RetryPolicy = BACKOFF,
    environ: dict[str, str] | None = None,
    **cfg: object,
) -> MessagesApiRunner:
    options: dict[str, object] = {"runner": "messages_api", "base_url": api.url, "idle_timeout_s": 5.0}
    options.update(cfg)
    env = {"ANTHROPIC_API_KEY": KEY, "HEALBOT_TELEGRAM_TOKEN": TELEGRAM_TOKEN} if environ is None else environ
    return MessagesApiRunner(ClaudeConfig(**options), environ=env, retry=retry)  # type: ignore[arg-type]


def request(scenario: str, *, schema: str | None = None, **kw: object) -> RunRequest:
    return RunRequest(
        prompt=f"What broke? [[scenario:{scenario}]]",
        schema=load_schema() if schema is None else schema,
        cwd="/nonexistent-is-fine-for-the-api",
        **kw,  # type: ignore[arg-type]
    )


async def test_structured_answer_through_the_forced_tool(fake_api: FakeMessagesApi) -> None:
    runner = make_runner(fake_api, model="claude-sonnet-4-6")
    result = await runner.run(request("structured"))
    assert isinstance(result.structured, dict)
    assert result.structured["candidates"][0]["kind"] == "restart"
    assert result.stats.runner == "messages-api"
    assert result.stats.cost_usd == pytest.approx(estimate_cost("claude-sonnet-4-6", 12, 8))
    (sent,) = fake_api.message_requests()
    assert KEY in (sent.headers.get("x-api-key", "") + sent.headers.get("authorization", ""))
    assert sent.body["model"] == "claude-sonnet-4-6"
    assert sent.body["stream"] is True
    assert sent.body["max_tokens"] == runner.max_tokens
    assert [t["name"] for t in sent.body["tools"]] == [ANSWER_TOOL]  # no other tools: the model only answers
    assert sent.body["tool_choice"] == {"type": "tool", "name": ANSWER_TOOL}
    assert sent.body["tools"][0]["input_schema"] == json.loads(load_schema())
    assert TELEGRAM_TOKEN not in sent.text()


async def test_plain_text_answer_without_a_schema(fake_api: FakeMessagesApi) -> None:
    result = await make_runner(fake_api).run(request("text", schema=""))
    assert result.structured is None
    assert result.text == "ok"
    assert "tools" not in fake_api.message_requests()[0].body


@pytest.mark.parametrize("scenario", ["flaky_overloaded", "flaky_rate_limited"])
async def test_529_and_429_are_retried_with_growing_backoff(fake_api: FakeMessagesApi, scenario: str) -> None:
    result = await make_runner(fake_api).run(request(scenario))
    assert isinstance(result.structured, dict)
    sent = fake_api.message_requests()
    assert len(sent) == 3
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(sent)]
    assert gaps[0] >= 0.1 * 0.9
    assert gaps[1] >= 0.2 * 0.9


async def test_overload_that_does_not_end_raises_overloaded_after_the_retries(
    fake_api: FakeMessagesApi,
) -> None:
    with pytest.raises(RunnerOverloaded, match="529"):
        await make_runner(fake_api).run(request("overloaded"))
    assert len(fake_api.message_requests()) == 1 + BACKOFF.max_retries


async def test_rate_limit_that_does_not_end_raises_overloaded(fake_api: FakeMessagesApi) -> None:
    with pytest.raises(RunnerOverloaded, match="429"):
        await make_runner(fake_api).run(request("rate_limited"))
    assert len(fake_api.message_requests()) == 3


async def test_a_stream_that_stops_halfway_is_retried_then_reported(fake_api: FakeMessagesApi) -> None:
    with pytest.raises(RunnerOutputError, match="stopped halfway"):
        await make_runner(fake_api).run(request("cut"))
    assert len(fake_api.message_requests()) == 3


async def test_a_silent_stream_trips_the_no_output_watchdog(fake_api: FakeMessagesApi) -> None:
    with pytest.raises(RunnerTimeout, match="no-output watchdog"):
        await make_runner(fake_api, idle_timeout_s=0.3).run(request("stall"))
    assert len(fake_api.message_requests()) == 1


async def test_no_response_headers_trips_the_watchdog(fake_api: FakeMessagesApi) -> None:
    with pytest.raises(RunnerTimeout):
        await make_runner(fake_api, idle_timeout_s=0.3).run(request("hang"))


async def test_wall_clock_limit_covers_the_whole_run(fake_api: FakeMessagesApi) -> None:
    with pytest.raises(RunnerTimeout, match="wall-clock"):
        await make_runner(fake_api, timeout_s=0.3, idle_timeout_s=5.0).run(request("slow"))


async def test_bad_key_is_an_auth_error_and_not_retried(fake_api: FakeMessagesApi) -> None:
    with pytest.raises(RunnerAuthError, match="401"):
        await make_runner(fake_api).run(request("auth"))
    assert len(fake_api.message_requests()) == 1


async def test_missing_key_fails_before_any_request(fake_api: FakeMessagesApi) -> None:
    runner = make_runner(fake_api, environ={})
    assert any("ANTHROPIC_API_KEY" in w for w in runner.startup_warnings())
    with pytest.raises(RunnerAuthError, match="ANTHROPIC_API_KEY"):
        await runner.run(request("structured"))
    assert fake_api.message_requests() == ()


async def test_answer_not_matching_the_schema_is_an_output_error(fake_api: FakeMessagesApi) -> None:
    with pytest.raises(RunnerOutputError, match=r"answer\.summary must be of type string"):
        await make_runner(fake_api).run(request("malformed"))


async def test_text_instead_of_the_tool_is_an_output_error(fake_api: FakeMessagesApi) -> None:
    with pytest.raises(RunnerOutputError, match="without a structured answer"):
        await make_runner(fake_api).run(request("text"))


async def test_garbage_instead_of_events_is_an_output_error(fake_api: FakeMessagesApi) -> None:
    with pytest.raises(RunnerOutputError):
        await make_runner(fake_api).run(request("garbage"))


async def test_costly_answer_hits_the_budget_and_keeps_its_stats(fake_api: FakeMessagesApi) -> None:
    with pytest.raises(RunnerLimitReached, match="max_budget_usd") as caught:
        await make_runner(fake_api, max_budget_usd=1.0).run(request("budget"))
    stats = getattr(caught.value, "stats", None)
    assert stats is not None
    assert stats.cost_usd is not None
    assert stats.cost_usd > 1.0


async def test_prompt_over_budget_is_never_sent(fake_api: FakeMessagesApi) -> None:
    runner = make_runner(fake_api, max_budget_usd=0.01)
    huge = RunRequest(prompt="x" * 400_000, schema="", cwd="/")
    with pytest.raises(RunnerLimitReached, match="not sent"):
        await runner.run(huge)
    assert fake_api.message_requests() == ()


async def test_follow_up_resumes_the_kept_conversation(fake_api: FakeMessagesApi) -> None:
    runner = make_runner(fake_api)
    first = await runner.run(request("structured", persist_session=True))
    session = first.stats.session_id
    assert session
    await runner.run(request("text", schema="", resume_session=session))
    second = fake_api.message_requests()[1].body["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert "Restart the service" in second[1]["content"]
    with pytest.raises(RunnerError, match="no conversation"):
        await runner.run(request("text", schema="", resume_session="api-unknown"))
    assert len(fake_api.message_requests()) == 2


@pytest.mark.parametrize("delta_bytes", [1, 7, 4096])
async def test_an_answer_streamed_in_many_deltas_is_assembled_once(
    fake_api: FakeMessagesApi, delta_bytes: int
) -> None:
    fake_api.delta_bytes = delta_bytes
    result = await make_runner(fake_api).run(request("structured"))
    assert isinstance(result.structured, dict)
    assert result.structured["candidates"][0]["kind"] == "restart"
    text = await make_runner(fake_api).run(request("text", schema=""))
    assert text.text == "ok"


@pytest.mark.parametrize("kind", ["structured", "text"])
async def test_a_huge_streamed_answer_starved_the_daemon(kind: str) -> None:
    """Issue 12.3: a 20 MB answer is cut off as soon as it passes the byte cap, not read to its end."""
    huge = "x" * (20 * 1024 * 1024)
    answer = {"summary": huge, "candidates": []}
    with FakeMessagesApi(structured=answer, text=huge, delta_bytes=16 * 1024) as api:
        with pytest.raises(RunnerOutputError, match=r"passed 1024 KB and was cut off"):
            await make_runner(api, retry=RetryPolicy(max_retries=0)).run(
                request(kind, schema=None if kind == "structured" else "")
            )
        await until(lambda: api.streams_left_early == 1, what="the client stopped reading")
        assert len(api.message_requests()) == 1  # a cut-off answer is not asked for again


async def test_max_concurrent_limits_requests_in_flight(fake_api: FakeMessagesApi) -> None:
    fake_api.slow_delay_s = 0.2
    runner = make_runner(fake_api, max_concurrent=1)
    await asyncio.gather(*(runner.run(request("slow")) for _ in range(2)))
    assert fake_api.max_in_flight == 1


async def test_cancel_all_stops_a_run_with_runner_cancelled(fake_api: FakeMessagesApi) -> None:
    runner = make_runner(fake_api)
    task = asyncio.create_task(runner.run(request("hang")))
    for _ in range(200):
        if fake_api.message_requests():
            break
        await asyncio.sleep(0.01)
    assert await runner.cancel_all() == 1
    with pytest.raises(RunnerCancelled):
        await task


async def test_diagnosis_through_the_api_runner(fake_api: FakeMessagesApi) -> None:
    evidence = Evidence(
        service="shop",
        title="ZeroDivisionError: division by zero",
        fingerprint="fp-1",
        exception_type="ZeroDivisionError",
        count=3,
        first_seen=1.0,
        last_seen=2.0,
        samples=("ZeroDivisionError: division by zero",),
        code=(CodeContext(path="shop.py", line=3, function="avg", snippet="3  return a / b"),),
        recent_commits=(),
        past_outcomes=(),
        allowed_paths=(),
        runbooks=(),
        head="0" * 40,
    )
    diagnosis = await diagnose(make_runner(fake_api), evidence, "/")
    assert [fix.kind for fix in diagnosis.fixes] == [FixKind.RESTART]
    assert "return a / b" in json.dumps(fake_api.message_requests()[0].body)  # evidence is in the prompt


def _config(tmp_path: Path, runner: str) -> object:
    raw = {
        "claude": {"runner": runner},
        "services": {"web": {"repo": str(tmp_path), "manager": {"type": "command", "restart": ["true"]}}},
    }
    return parse_config(raw, tmp_path / "healbot.toml", check_repos=False)


def test_build_runner_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(build_runner(_config(tmp_path, "cli")), ClaudeCliRunner)  # type: ignore[arg-type]
    assert isinstance(build_runner(_config(tmp_path, "messages_api")), MessagesApiRunner)  # type: ignore[arg-type]


def test_the_sdk_is_imported_only_when_the_api_runner_runs() -> None:
    code = "import sys, bot.daemon, bot.cli, bot.runner.messages_api; print('anthropic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"summary": "s"}, "answer.candidates is required"),
        ({"summary": "", "candidates": []}, "answer.summary must be at least 1 characters"),
        ({"summary": "s", "candidates": [], "extra": 1}, "answer.extra is not allowed"),
        ({"summary": "s", "candidates": []}, "answer.candidates must have at least 1 item(s)"),
        (
            {
                "summary": "s",
                "candidates": [{"title": "t", "rationale": "r", "risk": "huge", "kind": "patch"}],
            },
            "answer.candidates[0].risk must be one of low, medium, high, not 'huge'",
        ),
        (
            {
                "summary": "s",
                "candidates": [
                    {"title": "t", "rationale": "r", "risk": "low", "kind": "revert_commit", "commit": "zz"}
                ],
            },
            "answer.candidates[0].commit must match",
        ),
        ([], "answer must be of type object, not list"),
    ],
)
def test_schema_check_names_the_first_problem(value: object, problem: str) -> None:
    found = schema_problem(value, json.loads(load_schema()))
    assert found is not None
    assert found.startswith(problem)


def test_schema_check_accepts_a_valid_answer() -> None:
    answer = {
        "summary": "s",
        "candidates": [{"title": "t", "rationale": "r", "risk": "low", "kind": "restart"}],
    }
    assert schema_problem(answer, json.loads(load_schema())) is None


def test_doctor_names_the_billing_and_a_missing_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.commands import doctor
    from tests.helpers import make_repo

    repo = make_repo(tmp_path / "repo", {"a.py": "x = 1\n"})
    config = tmp_path / "healbot.toml"
    config.write_text(
        f'[healbot]\nstate_dir = "{tmp_path / "state"}"\n[claude]\nrunner = "messages_api"\n'
        f'[services.web]\nrepo = "{repo}"\nmanager = {{ type = "command", restart = ["true"] }}\n'
    )
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    assert doctor(config) == 1
    assert "✗ ANTHROPIC_API_KEY is not set" in capsys.readouterr().out
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    doctor(config)
    out = capsys.readouterr().out
    assert "billed per token" in out
    assert KEY not in out
