"""Claude sessions per service: a new incident of the same service within `session_minutes` and
`session_messages` resumes the service's session; past either limit, or after /newsession, it starts cold;
a session the runner forgot is dropped and the diagnosis starts cold."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bot.config import ClaudeConfig
from bot.demo.fake_messages_api import FakeMessagesApi
from bot.flow import sessions
from bot.flow.diagnosis import _diagnose_in_session
from bot.models import Evidence, IncidentState, RunStats
from bot.runner.claude_cli import ClaudeCliRunner
from bot.store import Store
from tests.conftest import claude_binary
from tests.helpers import make_repo

ANSWER = {
    "summary": "s",
    "candidates": [{"title": "t", "rationale": "r", "risk": "low", "kind": "restart"}],
}
CFG = ClaudeConfig(session_minutes=60.0, session_messages=3)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "state.db")


def stats(session: str, runner: str = "claude-cli") -> RunStats:
    return RunStats(runner, 1.0, session_id=session)


def test_a_recent_session_is_resumed_until_its_message_limit(store: Store) -> None:
    assert sessions.to_resume(store, "api", runner="claude-cli", cfg=CFG, now=1000.0) is None
    sessions.note(store, "api", stats("s1"), resumed=None, now=1000.0)
    for n in range(2, 4):
        resume = sessions.to_resume(store, "api", runner="claude-cli", cfg=CFG, now=1000.0 + n)
        assert resume == "s1"
        sessions.note(store, "api", stats("s1"), resumed=resume, now=1000.0 + n)
    assert sessions.load(store, "api") == sessions.ServiceSession("s1", "claude-cli", 1000.0, 3)
    assert sessions.to_resume(store, "api", runner="claude-cli", cfg=CFG, now=1010.0) is None  # 3 used up


def test_an_old_session_another_runners_or_a_switched_off_one_is_not_resumed(store: Store) -> None:
    sessions.note(store, "api", stats("s1"), resumed=None, now=1000.0)
    assert sessions.to_resume(store, "api", runner="claude-cli", cfg=CFG, now=1000.0 + 3601) is None
    assert sessions.to_resume(store, "api", runner="messages-api", cfg=CFG, now=1001.0) is None
    off = ClaudeConfig(session_minutes=0.0)
    assert sessions.to_resume(store, "api", runner="claude-cli", cfg=off, now=1001.0) is None
    assert sessions.to_resume(store, "web", runner="claude-cli", cfg=CFG, now=1001.0) is None


def test_newsession_forgets_it(store: Store) -> None:
    sessions.note(store, "api", stats("s1"), resumed=None, now=1000.0)
    assert sessions.reset(store, "api", actor="telegram:1", now=1001.0)
    assert sessions.to_resume(store, "api", runner="claude-cli", cfg=CFG, now=1002.0) is None
    assert not sessions.reset(store, "api", actor="telegram:1", now=1003.0)
    assert any(e.event == "setting:claude_session:api" and e.actor == "telegram:1" for e in store.audit_log())


def evidence(title: str) -> Evidence:
    return Evidence(
        service="api", title=title, fingerprint="fp", exception_type=None, count=1, first_seen=0.0,
        last_seen=0.0, samples=("boom",), code=(), recent_commits=(), past_outcomes=(), allowed_paths=(),
        runbooks=(), head="0" * 40,
    )  # fmt: skip


@pytest.mark.real_cli
def test_the_next_incident_resumes_the_services_claude_session(store: Store, tmp_path: Path) -> None:
    binary = claude_binary()
    if binary is None:
        pytest.fail("the claude binary is missing: run `make tools`")
    repo = make_repo(tmp_path / "repo", {"app.py": "x = 1\n"})
    with FakeMessagesApi(structured=ANSWER) as api:
        cfg = ClaudeConfig(binary=binary, base_url=api.url, timeout_s=60.0, session_messages=2)
        env = {"ANTHROPIC_API_KEY": "test", "CLAUDE_CODE_MAX_RETRIES": "0", "API_TIMEOUT_MS": "20000"}
        runner = ClaudeCliRunner(cfg, extra_env=env, config_dir=tmp_path / "claude-config")
        flow: Any = SimpleNamespace(
            runtime=lambda service: SimpleNamespace(cfg=SimpleNamespace(repo=repo)),
            clock=SimpleNamespace(now=time.time),
            store=store,
            runner=runner,
            config=SimpleNamespace(claude=cfg),
        )

        def diagnose(title: str, incident_id: int) -> str:
            incident = SimpleNamespace(id=incident_id, service="api", state=IncidentState.OPEN)
            asyncio.run(_diagnose_in_session(flow, incident, evidence(title), None))
            return api.message_requests()[-1].text()

        first = diagnose("FIRST-INCIDENT-7a1", 1)
        second = diagnose("SECOND-INCIDENT-7a2", 2)
        third = diagnose("THIRD-INCIDENT-7a3", 3)

    assert "FIRST-INCIDENT-7a1" in first
    assert "FIRST-INCIDENT-7a1" in second  # resumed: claude re-sent the first diagnosis
    assert "FIRST-INCIDENT-7a1" not in third  # two messages were the limit: cold again
    assert "SECOND-INCIDENT-7a2" not in third
    session = sessions.load(store, "api")
    assert session is not None
    assert session.messages == 1


@pytest.mark.real_cli
def test_a_session_claude_forgot_is_dropped_and_the_diagnosis_starts_cold(
    store: Store, tmp_path: Path
) -> None:
    binary = claude_binary()
    if binary is None:
        pytest.fail("the claude binary is missing: run `make tools`")
    repo = make_repo(tmp_path / "repo", {"app.py": "x = 1\n"})
    gone = "00000000-0000-4000-8000-000000000000"
    sessions.note(store, "api", stats(gone), resumed=None, now=time.time())
    with FakeMessagesApi(structured=ANSWER) as api:
        cfg = ClaudeConfig(binary=binary, base_url=api.url, timeout_s=60.0)
        env = {"ANTHROPIC_API_KEY": "test", "CLAUDE_CODE_MAX_RETRIES": "0", "API_TIMEOUT_MS": "20000"}
        runner = ClaudeCliRunner(cfg, extra_env=env, config_dir=tmp_path / "claude-config")
        flow: Any = SimpleNamespace(
            runtime=lambda service: SimpleNamespace(cfg=SimpleNamespace(repo=repo)),
            clock=SimpleNamespace(now=time.time),
            store=store,
            runner=runner,
            config=SimpleNamespace(claude=cfg),
        )
        incident = SimpleNamespace(id=1, service="api", state=IncidentState.OPEN)
        result = asyncio.run(_diagnose_in_session(flow, incident, evidence("AFTER-7b"), None))

    assert result.summary == "s"
    session = sessions.load(store, "api")
    assert session is not None
    assert session.session_id != gone
    assert session.messages == 1
