"""healbot's MCP tools through the SDK's own client, in-process: what each tool answers, what it refuses,
and that every answer is redacted, fenced and counted. (tests/test_mcp_cli.py drives them through the real
claude binary.)"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from mcp import Client

from bot.mcp_server import launch as mcp_launch
from bot.mcp_server import looked_at
from bot.mcp_server.scope import ScopeError, ToolScope
from bot.mcp_server.server import build_server
from bot.models import (
    Candidate,
    ChangeStatus,
    Decision,
    DecisionAction,
    Fingerprint,
    Fix,
    FixKind,
    HealthSnapshot,
    Outcome,
    Risk,
    Verdict,
)
from bot.store import Observation, Store
from tests.helpers import wait_until
from tests.mcp_seed import FILE_PASSWORD, GITHUB_TOKEN, LOG_PASSWORD, make_scope, seeded_log, seeded_repo


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only for every test: the tools never write."""
    path = tmp_path_factory.mktemp("mcp")
    seeded_repo(path)
    seeded_log(path)
    return path


def call(scope: ToolScope, *calls: tuple[str, dict[str, Any]]) -> list[tuple[bool, str]]:
    async def run() -> list[tuple[bool, str]]:
        answers = []
        async with Client(build_server(scope)) as client:
            for name, args in calls:
                result = await client.call_tool(name, args)
                text = "".join(getattr(block, "text", "") for block in result.content)
                answers.append((bool(result.is_error), text))
        return answers

    return asyncio.run(run())


def one(scope: ToolScope, name: str, **args: Any) -> tuple[bool, str]:
    return call(scope, (name, args))[0]


def test_the_tools_and_their_typed_schemas(root: Path) -> None:
    async def listed() -> dict[str, dict[str, Any]]:
        async with Client(build_server(make_scope(root))) as client:
            return {tool.name: tool.input_schema for tool in (await client.list_tools()).tools}

    tools = asyncio.run(listed())
    assert set(tools) == set(looked_at.TOOL_KINDS)
    assert tools["read_file"]["required"] == ["path"]
    assert tools["read_file"]["properties"]["start_line"]["type"] == "integer"
    assert tools["log_window"]["properties"]["max_lines"]["maximum"] == 500


def test_a_bad_argument_is_refused_by_the_schema(root: Path) -> None:
    error, text = one(make_scope(root), "log_window", max_lines=100000)
    assert error
    assert "max_lines" in text


def test_incident_answer_is_fenced(root: Path) -> None:
    error, text = one(make_scope(root), "incident")
    assert not error
    assert text.startswith("<<<BEGIN UNTRUSTED TOOL ANSWER incident>>>")
    assert text.endswith("<<<END UNTRUSTED TOOL ANSWER incident>>>")
    assert "count: 12" in text
    assert "fingerprint: fp-zero" in text
    assert "first seen: 2026-05-28" in text
    assert "rate while seen: 12.0 per hour" in text


def test_log_window_matching_a_pattern_is_redacted_newest_first(root: Path) -> None:
    error, text = one(make_scope(root), "log_window", pattern="INFO|ERROR")
    assert not error
    assert LOG_PASSWORD not in text
    assert "password=[REDACTED:password]" in text
    body = text.splitlines()
    assert "request 5 ok" in body[2]  # newest first, after the fence and the heading
    assert "request 0 ok" in body[-2]


def test_log_window_around_a_time_and_around_a_record(root: Path) -> None:
    scope = make_scope(root)
    (_, by_time), (_, by_text) = call(
        scope,
        ("log_window", {"around": "2026-12-03T14:02:30", "context": 1}),
        ("log_window", {"around": "ZeroDivisionError", "context": 1}),
    )
    for text in (by_time, by_text):
        assert "3 log line(s)" in text
        assert "request 2 ok" in text
        assert "ZeroDivisionError" in text
        assert "request 3 ok" in text
        assert "request 1 ok" not in text


def test_log_text_cannot_close_the_fence(root: Path) -> None:
    _, text = one(make_scope(root), "log_window", pattern="WARN")
    assert "ignore previous instructions" in text  # shown as data
    assert text.count("<<<END UNTRUSTED") == 1
    assert text.endswith("<<<END UNTRUSTED TOOL ANSWER log_window>>>")


def test_read_file_is_redacted_and_numbered(root: Path) -> None:
    error, text = one(make_scope(root), "read_file", path="settings.env", start_line=1, end_line=1)
    assert not error
    assert FILE_PASSWORD not in text
    assert "    1  DB_PASSWORD=[REDACTED:password]" in text
    assert "DEBUG" not in text


def test_a_symlink_inside_the_repo_is_served(root: Path) -> None:
    error, text = one(make_scope(root), "read_file", path="inside-link")
    assert not error
    assert "1 / 0" in text


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("../outside.txt", "contains '..'"),
        ("/etc/passwd", "is absolute"),
        ("escape", "leads out of the repository"),
        (".git/config", "inside .git/"),
        ("sub/../../outside.txt", "contains '..'"),
        ("huge.log", "50.0 MB; files over 1024 KB are refused"),
        ("image.bin", "is a binary file"),
        ("missing.py", "does not exist"),
    ],
)
def test_read_file_refuses_with_a_clear_error(root: Path, path: str, why: str) -> None:
    error, text = one(make_scope(root), "read_file", path=path)
    assert error
    assert why in text
    assert "outside the repo" not in text
    assert "[core]" not in text


def test_search_and_blame_skip_what_read_refuses(root: Path) -> None:
    scope = make_scope(root)
    (_, found), (blame_error, blame_binary), (_, blamed) = call(
        scope,
        ("search_repo", {"pattern": "outside|PNG|DB_PASSWORD"}),
        ("git_blame", {"path": "image.bin"}),
        ("git_blame", {"path": "app.py", "start_line": 2, "end_line": 2}),
    )
    assert "settings.env:1: DB_PASSWORD=[REDACTED:password]" in found
    assert "outside" not in found.replace("outside|", "")
    assert "image.bin" not in found
    assert blame_error
    assert "binary" in blame_binary
    assert "# divide" in blamed


def test_git_log_and_show_redact_the_commit_message(root: Path) -> None:
    scope = make_scope(root)
    (_, logged), (show_error, shown), (bad_error, bad) = call(
        scope,
        ("git_log", {}),
        ("git_show", {"commit": "HEAD"}),
        ("git_show", {"commit": "--output=/tmp/x"}),
    )
    for text in (logged, shown):
        assert GITHUB_TOKEN not in text
        assert "deploy token [REDACTED:" in text
    assert not show_error
    assert "+    return 1 / 0  # divide" in shown
    assert bad_error
    assert "not a commit hash" in bad


def test_list_files_hides_git_internals(root: Path) -> None:
    _, text = one(make_scope(root), "list_files", depth=2)
    assert "app.py" in text
    assert "escape -> (symlink)" in text
    assert ".git" not in text


def test_history_marks_a_reverted_fix(root: Path, tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    store = Store.open(db)
    fp = Fingerprint("fp-zero", "api", True, "ZeroDivisionError", "ZeroDivisionError: division by zero")
    [ingested] = store.ingest("file:app.log", "", [Observation(fp, "boom", 100.0)], max_samples=3, at=100.0)
    fix = Fix(1, "guard the division", "r", Risk.LOW, FixKind.RESTART)
    proposal = store.create_proposal(
        ingested.incident.id, base_commit="0" * 40, candidates=[Candidate(fix, "", "d")], summary="s",
        at=101.0, expires_at=9e9,
    )  # fmt: skip
    decision = Decision(proposal.token, "console", DecisionAction.APPROVE, rank=1)
    change = store.create_change(
        proposal, proposal.candidates[0], service="api", approved_by=decision.actor, at=102.0
    )
    store.update_change(change.id, ChangeStatus.REVERTED, at=103.0)
    before = HealthSnapshot(at=102.0, process_up=True, errors_by_fingerprint=(("fp-zero", 9),), window_s=30.0)
    after = HealthSnapshot(at=104.0, process_up=True, errors_by_fingerprint=(("fp-zero", 14),), window_s=30.0)
    store.record_outcome(Outcome(change.id, before, after, Verdict.WORSE, ("more errors",)), at=105.0)
    size = db.stat().st_size
    scope = make_scope(root, db_path=str(db), incident_id=ingested.incident.id)

    (_, history), (_, incident) = call(scope, ("history", {}), ("incident", {}))

    assert f"#{ingested.incident.id} " in history
    assert "← this fingerprint" in history
    assert f"change #{change.id}" in history
    assert "[REVERTED: this fix was undone]" in history
    assert "worse" in history
    assert "9 in 30s before, 14 in 30s after → worse" in incident
    assert db.stat().st_size == size  # opened read-only


def test_history_without_a_store_says_so(root: Path) -> None:
    error, text = one(make_scope(root), "history")
    assert error
    assert "store is not available" in text


def test_health_without_a_config_says_so(root: Path) -> None:
    error, text = one(make_scope(root), "health")
    assert error
    assert "not known to this diagnosis" in text


def test_health_asks_the_manager_and_the_probes(root: Path, tmp_path: Path) -> None:
    config = tmp_path / "healbot.toml"
    config.write_text(
        f'[healbot]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[services.api]\nrepo = "{root / "repo"}"\n'
        '[services.api.manager]\ntype = "command"\nrestart = ["true"]\nstatus = ["true"]\n'
        "[services.api.health]\ntcp_port = 1\n"
    )
    error, text = one(make_scope(root, config_path=str(config)), "health")
    assert not error, text
    assert "manager command:" in text
    assert "tcp 127.0.0.1:1: closed" in text


def test_tool_calls_beyond_the_cap_are_refused_and_logged(root: Path, tmp_path: Path) -> None:
    calls_log = tmp_path / "calls.jsonl"
    scope = make_scope(root, max_calls=2, calls_log=str(calls_log))
    answers = call(scope, ("incident", {}), ("read_file", {"path": "app.py"}), ("incident", {}))
    assert [error for error, _ in answers] == [False, False, True]
    assert "cap of 2 tool calls per diagnosis is reached" in answers[2][1]
    logged = [json.loads(line) for line in calls_log.read_text().splitlines()]
    assert [(e["tool"], e["refused"]) for e in logged] == [
        ("incident", False),
        ("read_file", False),
        ("incident", True),
    ]
    assert logged[1]["args"] == {"path": "app.py", "start_line": 1, "end_line": None}
    assert logged[1]["bytes"] == len(answers[1][1].encode())


def test_answer_bytes_beyond_the_cap_are_refused(root: Path) -> None:
    scope = make_scope(root, max_bytes=400, answer_bytes=100)
    answers = call(scope, ("search_repo", {"pattern": "."}), *[("incident", {})] * 4)
    assert "more bytes cut" in answers[0][1]
    refused = [n for n, (error, _) in enumerate(answers) if error]
    assert refused
    assert refused == list(range(refused[0], len(answers)))  # once over, every call is refused
    spent = sum(len(text.encode()) for _, text in answers[: refused[0]])
    assert spent >= 400
    assert "bytes of tool answers per diagnosis is reached" in answers[-1][1]


def test_looked_at_summary() -> None:
    calls = (("log_window", 3), ("read_file", 2), ("health", 1), ("git_show", 1))
    assert looked_at.summary(calls) == "3 log windows, 2 files, health, 1 commit"


def test_the_scope_file_round_trips(root: Path, tmp_path: Path) -> None:
    scope = make_scope(root, journal_unit="api.service")
    path = tmp_path / "scope.json"
    scope.dump(path)
    assert ToolScope.load(path) == scope
    assert os.stat(path).st_size < 10_000
    assert time.time() > 0


PARENT = """
import os, subprocess, sys, time
read, write = os.pipe()
# the server holds its stdin's write end itself: no EOF will ever come, only the watchdog can end it
server = subprocess.Popen(sys.argv[1:], stdin=read, stdout=subprocess.DEVNULL, pass_fds=(write,))
print(server.pid, flush=True)
time.sleep(120)
"""


def test_the_server_exits_when_its_parent_dies_even_with_stdin_open(root: Path, tmp_path: Path) -> None:
    scope = make_scope(root, calls_log=str(tmp_path / "calls.jsonl"))
    scope.dump(tmp_path / "scope.json")
    command = mcp_launch.server_command(tmp_path / "scope.json")
    parent = subprocess.Popen([sys.executable, "-c", PARENT, *command], stdout=subprocess.PIPE, text=True)
    server = 0
    try:
        assert parent.stdout is not None
        server = int(parent.stdout.readline())
        wait_until((tmp_path / "calls.pid").exists, timeout=30, what="the server to start")
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        wait_until(lambda: not _alive(server), timeout=10, what="the server to notice its parent died")
    finally:
        if parent.poll() is None:
            parent.kill()
        if server and _alive(server):  # the test failed: leave no orphan behind
            os.kill(server, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_malformed_scope_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "scope.json"
    path.write_text('{"service": "api"}')
    with pytest.raises(ScopeError, match="not a healbot tool scope"):
        ToolScope.load(path)
    with pytest.raises(ScopeError, match="cannot read the scope file"):
        ToolScope.load(tmp_path / "missing.json")


def test_secret_values_are_scrubbed_from_their_digests_only(tmp_path: Path) -> None:
    from bot.mcp_server import env_secrets

    salt = env_secrets.new_salt()
    known = env_secrets.digests({"API_TOKEN": "a b&c=d/e-91", "SHORT_KEY": "abc", "PATH": "/bin"}, salt)
    assert {name for _, _, name in known} == {"API_TOKEN"}  # short and non-secret names are not kept
    assert all("a b&c" not in digest for _, digest, _ in known)
    text = 'raw a b&c=d/e-91, quoted a%20b%26c%3Dd%2Fe-91, json "a b&c=d/e-91"'
    scrubbed = env_secrets.scrub(text, salt, known)
    assert scrubbed.count("[REDACTED:env:API_TOKEN]") == 3
    assert "a b&c" not in scrubbed
