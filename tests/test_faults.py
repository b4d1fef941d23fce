"""Crash consistency: a real `healbot run` SIGKILLs itself at each step of the pipeline (HEALBOT_FAULT), is
started again, and must keep every promise: no incident lost, no commit without its record, no half-applied
fix in the work tree, no fix applied twice, no approval replayed, the operator told what happened, and an
audit log that tells the whole story."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.demo.fake_messages_api import FakeMessagesApi
from bot.faults import ENV_VAR, Step, armed
from bot.models import ChangeStatus, IncidentState
from bot.store import Store, backups
from tests.conftest import claude_binary
from tests.helpers import git, make_repo, wait_until

pytestmark = pytest.mark.real_cli

HEALBOT = str(Path(sys.executable).parent / "healbot")
APP = 'PRICES = {"apple": 1}\n\n\ndef total(name):\n    return PRICES[name]\n'
ANSWER = {
    "summary": "unknown items raise KeyError",
    "candidates": [
        {
            "title": "Default unknown prices to 0",
            "rationale": "PRICES[name] raises for unknown names",
            "risk": "low",
            "kind": "patch",
            "edits": [{"path": "app.py", "old": "return PRICES[name]", "new": "return PRICES.get(name, 0)"}],
        }
    ],
}
BUSY_INCIDENT = {
    IncidentState.OPEN,
    IncidentState.DIAGNOSING,
    IncidentState.AWAITING_APPROVAL,
    IncidentState.APPLYING,
    IncidentState.VERIFYING,
}
BUSY_CHANGE = {ChangeStatus.APPLYING, ChangeStatus.COMMITTED, ChangeStatus.RESTARTED}

# What the restarted daemon must say, and how many commits healbot leaves (apply, apply + revert).
EXPECTED: dict[Step, tuple[str, int]] = {
    Step.INCIDENT_STORED: ("", 1),
    Step.DIAGNOSIS_STARTED: ("diagnosis was interrupted; it will run again", 1),
    Step.WORKTREE_PREPARED: ("diagnosis was interrupted; it will run again", 1),
    Step.PROPOSAL_STORED: ("--yes: approving #1", 1),
    Step.CARD_SENT: ("the daemon stopped before the fix was applied; nothing was changed", 0),
    Step.APPROVAL_RECORDED: ("the daemon stopped before the fix was applied; nothing was changed", 0),
    Step.COMMIT_MADE: ("but the daemon stopped before the restart; nothing was repeated", 1),
    Step.RESTART_ISSUED: ("interrupted while verifying change {commit}: verifying again", 1),
    Step.VERIFICATION_RUNNING: ("interrupted while verifying change {commit}: verifying again", 1),
    Step.REVERT_MADE: ("interrupted while reverting change {commit}: the revert", 2),
}


class Daemon:
    def __init__(self, config: Path, fault: Step | None) -> None:
        env = {**os.environ, "ANTHROPIC_API_KEY": "test", "CLAUDE_CODE_MAX_RETRIES": "0"}
        env.pop(ENV_VAR, None)
        if fault is not None:
            env[ENV_VAR] = fault.value
        self.proc = subprocess.Popen(
            [HEALBOT, "run", "--yes", "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> int | None:
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeMessagesApi]:
    with FakeMessagesApi(structured=ANSWER) as api:
        yield api


def write_config(path: Path, tmp: Path, repo: Path, log: Path, fake: FakeMessagesApi, restart: str) -> None:
    path.write_text(
        f"""
[healbot]
state_dir = "{tmp}/state"
poll_interval_s = 0.05

[claude]
binary = "{claude_binary()}"
base_url = "{fake.url}"
pass_env = ["ANTHROPIC_API_KEY", "CLAUDE_CODE_MAX_RETRIES"]

[policy]
grace_after_restart_s = 0

[services.svc]
repo = "{repo}"
logs = ["{log}"]

[services.svc.manager]
type = "command"
restart = {restart}

[services.svc.health]
process = false
window_s = 0.6
settle_s = 0.05
"""
    )


def traceback(repo: Path) -> str:
    return (
        "2026-11-26 06:00:00,000 ERROR svc[1]: request failed\nTraceback (most recent call last):\n"
        f"  File \"{repo}/app.py\", line 5, in total\n    return PRICES[name]\nKeyError: 'pear'\n"
        "INFO next request fine\n"
    )


def settled(store: Store) -> bool:
    incidents = store.incidents()
    changes = store.changes(limit=100)
    return (
        bool(incidents)
        and all(i.state not in BUSY_INCIDENT for i in incidents)
        and all(c.status not in BUSY_CHANGE for c in changes)
    )


def healbot_commits(repo: Path) -> list[tuple[str, str]]:
    """(sha, trailers) of every commit healbot made."""
    out = git(repo, "log", "--format=%H%x1f%(trailers:only,unfold)%x1e")
    commits = []
    for record in out.split("\x1e"):
        sha, _, trailers = record.strip().partition("\x1f")
        if "Healbot-" in trailers:
            commits.append((sha, trailers))
    return commits


def test_an_unknown_fault_name_is_refused_loudly() -> None:
    with pytest.raises(ValueError, match="not a step; known: incident_stored"):
        armed({ENV_VAR: "commit_mad"})
    assert armed({}) is None
    assert armed({ENV_VAR: "commit_made"}) is Step.COMMIT_MADE


@pytest.mark.parametrize("step", list(Step), ids=[s.value for s in Step])
def test_sigkill_at_each_step_then_a_restart_keeps_every_promise(
    tmp_path: Path, fake: FakeMessagesApi, step: Step
) -> None:
    if claude_binary() is None:
        pytest.fail("claude binary missing: run `make tools`")
    repo = make_repo(tmp_path / "svc", {"app.py": APP})
    log = tmp_path / "svc.log"
    log.write_text("starting\n")
    config = tmp_path / "healbot.toml"
    # A failing restart makes health worse, which is the only way to reach the revert step.
    write_config(config, tmp_path, repo, log, fake, '["false"]' if step is Step.REVERT_MADE else '["true"]')
    db = tmp_path / "state" / "healbot.db"

    first = Daemon(config, step)
    try:
        wait_until(db.exists, 20, what="the store")
        store = Store.open(db)
        wait_until(lambda: store.get_cursor(f"file:{log}"), 20, what="the first cursor")
        with log.open("a") as handle:
            handle.write(traceback(repo))
        first.proc.wait(timeout=60)
    finally:
        code = first.stop()
    assert code == -signal.SIGKILL, first.output()
    assert f"fault injected: SIGKILL at {step.value}" in first.output()

    note, commit_count = EXPECTED[step]
    write_config(config, tmp_path, repo, log, fake, '["true"]')
    second = Daemon(config, None)
    try:
        wait_until(lambda: settled(store), 30, what=f"a settled state after {step.value}")
        wait_until(lambda: note.split("{")[0] in second.output(), 10, what=f"the note {note!r}")
    finally:
        assert second.stop() == 0, second.output()
    said = second.output()

    [incident] = store.incidents()  # no incident lost, none counted twice
    changes = store.changes(limit=100)
    commits = healbot_commits(repo)
    assert len(commits) == commit_count, (commits, said)

    # No commit without its record; no fix applied twice; no approval replayed.
    recorded = {c.commit for c in changes} | {c.revert_commit for c in changes}
    assert {sha for sha, _ in commits} <= recorded
    assert len(changes) <= 1
    for proposal_id in {c.proposal_id for c in changes}:
        assert sum(1 for c in changes if c.proposal_id == proposal_id) == 1
    approvals = [e for e in store.audit_log(limit=1000) if e.event == "proposal:approved"]
    assert len(approvals) == len(changes)

    # No half-applied fix: a clean tree, no leftover scratch worktree, the file either fixed or original.
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    text = (repo / "app.py").read_text()
    assert text in (APP, APP.replace("return PRICES[name]", "return PRICES.get(name, 0)"))
    if step is Step.REVERT_MADE:
        assert text == APP

    # The operator is told what happened.
    applied = next((c for c in changes if c.commit), None)
    expected_note = note.format(commit=applied.commit[:10] if applied and applied.commit else "")
    assert expected_note in said, said

    # The audit log tells the story: the incident, its diagnosis, and every change status it went through.
    events = [e.event for e in store.audit_log(incident_id=incident.id, limit=1000)]
    assert events[0].startswith("state:") or "incident" in events[0], events
    for change in changes:
        assert f"change:{change.status.value}" in events, events
        assert "change:applying" in events
    if changes:
        assert "proposal:approved" in events
    assert backups(db), "the daemon takes its daily backup on start"
    store.close()
