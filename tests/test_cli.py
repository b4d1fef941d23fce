"""The `healbot` command as an operator runs it: a real subprocess of the installed console script."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import pytest

from bot.cli import log_level
from bot.config import load_config
from bot.demo.fake_messages_api import FakeMessagesApi
from bot.demo.run import _write_setup
from tests.conftest import REPO_ROOT, claude_binary
from tests.fakes.daemon_proc import FAKE_CLAUDE_ENV, HEALBOT
from tests.fakes.supervisor_env import Program, SupervisorEnv, tiny_service_argv
from tests.fakes.world import claude_via_fake_api, scratch_service, toml_table
from tests.helpers import free_port, git, make_repo

TRACEBACK = """2026-11-26 06:00:00,000 ERROR shop[42]: request /checkout failed
Traceback (most recent call last):
  File "{repo}/shop.py", line 5, in total
    return PRICES[name]
KeyError: 'pear'
"""


def healbot(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HEALBOT, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or dict(os.environ),
        check=False,
    )


def test_scan_prints_the_groups_and_writes_one_group_per_line(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    lines = []
    for i in range(3):
        lines.append(TRACEBACK.format(repo="/srv/shop").replace("'pear'", f"'item-{i}'"))
        lines.append(f'127.0.0.1 - - [26/Nov/2026 06:00:0{i}] "GET /health HTTP/1.1" 200 -\n')
    log.write_text("".join(lines))
    out = tmp_path / "groups.jsonl"
    result = healbot("scan", str(log), "--all", "--groups-out", str(out))
    assert result.returncode == 0, result.stderr
    assert "KeyError" in result.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == list(range(1, len(log.read_text().splitlines()) + 1))
    traceback_groups = {
        r["group"] for r in rows if "Traceback" in log.read_text().splitlines()[r["line"] - 1]
    }
    assert len(traceback_groups) == 1  # three KeyErrors with different keys are one group


def test_scan_of_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = healbot("scan", str(tmp_path / "nope.log"))
    assert result.returncode == 1
    assert "is not a readable file" in result.stderr


def supervisord_doctor_config(tmp_path: Path, socket: str | Path, logs: list[Path]) -> Path:
    """A service under supervisord at `socket`, with a claude binary that does not exist."""
    cfg = tmp_path / "healbot.toml"
    cfg.write_text(
        toml_table("claude", {"binary": tmp_path / "no-such-claude"})
        + toml_table(
            "services.shop", {"repo": make_repo(tmp_path / "shop", {"shop.py": "x = 1\n"}), "logs": logs}
        )
        + toml_table("services.shop.manager", {"type": "supervisord", "socket": socket, "program": "shop"})
    )
    return cfg


def test_doctor_reports_each_problem_with_its_fix(tmp_path: Path) -> None:
    cfg = supervisord_doctor_config(tmp_path, tmp_path / "no.sock", [tmp_path / "missing.log"])
    result = healbot("doctor", "-c", str(cfg))
    assert result.returncode == 1
    assert "✓ config" in result.stdout
    assert "claude binary" in result.stdout and "not found" in result.stdout
    assert "missing.log: file not found" in result.stdout
    assert "shop: supervisord:" in result.stdout


def test_doctor_runs_claude_version_and_reports_its_answer_or_its_failure(tmp_path: Path) -> None:
    stub = tmp_path / "no-such-claude"  # the binary supervisord_doctor_config names
    cfg = supervisord_doctor_config(tmp_path, tmp_path / "no.sock", [])
    stub.write_text("#!/bin/sh\necho '9.9.9 (Claude Code)'\n")
    stub.chmod(0o755)
    logged_in = tmp_path / "claude-config"
    logged_in.mkdir()
    (logged_in / ".credentials.json").write_text("{}")
    env = {**os.environ, "CLAUDE_CONFIG_DIR": str(logged_in)}
    answered = healbot("doctor", "-c", str(cfg), env=env)
    stub.write_text("#!/bin/sh\necho 'node: not found' >&2\nexit 3\n")
    failed = healbot("doctor", "-c", str(cfg), env=env)

    assert "✓ claude 9.9.9 (Claude Code)" in answered.stdout, answered.stdout
    assert "✗ claude --version exited 3: node: not found" in failed.stdout, failed.stdout
    assert "✓ claude tools: healbot's read-only MCP tools (healbot mcp), at most 40 calls" in answered.stdout


def test_doctor_says_when_the_builtin_tools_are_in_force(tmp_path: Path) -> None:
    cfg = supervisord_doctor_config(tmp_path, tmp_path / "no.sock", [])
    cfg.write_text(cfg.read_text().replace("[claude]\n", '[claude]\ntools = "builtin"\n', 1))
    result = healbot("doctor", "-c", str(cfg))
    assert "✓ claude tools: claude's built-in Read/Grep/Glob" in result.stdout, result.stdout
    assert "unredacted" in result.stdout


@pytest.mark.supervisord
def test_doctor_names_a_down_supervisord_once_and_its_log_files_row_points_above(tmp_path: Path) -> None:
    supervisor = SupervisorEnv.start(
        tmp_path / "sv", [Program("shop", tiny_service_argv(), {"PORT": str(free_port())})]
    )
    cfg = supervisord_doctor_config(tmp_path, supervisor.socket_path, [])
    try:
        supervisor.wait_state("shop", "RUNNING")
        up = healbot("doctor", "-c", str(cfg))
    finally:
        supervisor.stop()
    down = healbot("doctor", "-c", str(cfg))

    assert "✓ shop: supervisord reachable" in up.stdout
    assert "✓ shop: supervisord-log-files:shop: ok" in up.stdout
    assert down.returncode == 1
    assert down.stdout.count(supervisor.socket_path) == 1, down.stdout
    assert f"✗ shop: supervisord: supervisord socket {supervisor.socket_path} not found" in down.stdout
    assert "✗ shop: supervisord-log-files:shop: waits for supervisord (see above); asked again" in down.stdout


def test_a_malformed_config_stops_the_daemon_before_it_starts(tmp_path: Path) -> None:
    cfg = tmp_path / "healbot.toml"
    cfg.write_text("[healbot]\npoll_interval_s = 'fast'\n")
    result = healbot("run", "-c", str(cfg), timeout=30)
    assert result.returncode == 2
    assert f"{cfg}: healbot.poll_interval_s: must be a number" in result.stderr


@pytest.mark.real_cli
def test_diagnose_is_read_only_and_prints_the_exact_diff(tmp_path: Path) -> None:
    service = scratch_service(
        tmp_path,
        name="shop",
        files={"shop.py": 'PRICES = {"apple": 1}\n\n\ndef total(name):\n    return PRICES[name]\n'},
        log_text=None,
    )
    repo = service.repo
    service.append(TRACEBACK.format(repo=repo) * 2 + "INFO all good\n")
    answer = {
        "summary": "unknown items raise KeyError",
        "candidates": [
            {
                "title": "Default unknown prices to 0",
                "rationale": "PRICES[name] raises for unknown names",
                "risk": "low",
                "kind": "patch",
                "edits": [
                    {"path": "shop.py", "old": "return PRICES[name]", "new": "return PRICES.get(name, 0)"}
                ],
            }
        ],
    }
    with FakeMessagesApi(structured=answer) as fake:
        cfg = service.write_config(claude=claude_via_fake_api(fake.url))
        env = {**os.environ, **FAKE_CLAUDE_ENV, "HEALBOT_TELEGRAM_TOKEN": "123456789:SECRET"}
        result = healbot("diagnose", "shop", "-c", str(cfg), env=env)
        journal = "\n".join(e.text() for e in fake.message_requests())
    assert result.returncode == 0, result.stderr + result.stdout
    assert "+    return PRICES.get(name, 0)" in result.stdout
    assert "KeyError" in journal
    assert "123456789:SECRET" not in journal
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "rev-list", "--count", "HEAD") == "1"
    assert not (tmp_path / "state").exists()  # nothing stored


@pytest.mark.real_cli
@pytest.mark.supervisord
@pytest.mark.slow
def test_demo_keeps_the_good_fix_and_reverts_the_bad_one(tmp_path: Path) -> None:
    if claude_binary() is None:
        pytest.fail("claude binary missing: run `make tools`")
    summary = tmp_path / "summary.json"
    result = healbot(
        "demo", "--yes", "--summary-json", str(summary), "--workdir", str(tmp_path / "work"), timeout=180
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads(summary.read_text())
    [kept, reverted] = data["scenarios"]
    assert kept["action"] == "kept" and kept["verdict"] == "better" and kept["commit"]
    assert reverted["action"] == "reverted" and reverted["verdict"] == "worse"
    assert reverted["commit"] and reverted["revert_commit"]
    assert "FAKE Messages API" in result.stdout and "scripted" in result.stdout
    assert "skipped: Telegram" in result.stdout
    assert result.stdout.count("looked at: the incident, 1 log window, health, 1 file") == 2  # both cards
    [work] = list((tmp_path / "work").iterdir())
    repo = work / "shop"
    log = git(repo, "log", "--format=%H %s")
    assert kept["commit"] in log and reverted["revert_commit"] in log
    assert "PRICES.get(name)" in (repo / "shop.py").read_text()  # the good fix stayed
    assert "max(len(ORDER), 1)" not in (repo / "shop.py").read_text()  # the bad one is gone
    assert sum(s["seconds"] for s in data["scenarios"]) < 60
    assert "circuit breaker" not in result.stdout


def test_demo_ended_on_a_breaker_alarm(tmp_path: Path) -> None:
    """Issue 12.7: the demo's own restarts must leave the restart breaker untripped, so it never ends by
    escalating an incident the summary does not mention."""
    work = tmp_path / "work"
    work.mkdir()
    config = load_config(_write_setup(work, free_port(), "claude", False, tmp_path))
    restarts_in_demo = 3  # scenario 1's fix, scenario 2's fix, scenario 2's revert
    assert config.policy.restarts_per_service > restarts_in_demo


def test_readme_opens_with_the_two_commands() -> None:
    head = (REPO_ROOT / "README.md").read_text().splitlines()[:20]
    assert "make demo" in "\n".join(head) and "make test" in "\n".join(head)
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize(
    ("verbose", "daemon", "level"),
    [
        (0, False, logging.WARNING),
        (1, False, logging.INFO),
        (2, False, logging.DEBUG),
        (0, True, logging.INFO),
    ],
)
def test_dash_v_jumped_straight_to_debug(verbose: int, daemon: bool, level: int) -> None:
    """Issue 17.7: -v is INFO, -vv DEBUG; `healbot run` says what it does (INFO) without -v."""
    assert log_level(verbose, daemon=daemon) == level
