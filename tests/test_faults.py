"""Crash consistency: a real `healbot run` SIGKILLs itself at each step of the pipeline (HEALBOT_FAULT), is
started again, and must keep every promise: no incident lost, no commit without its record, no half-applied
fix in the work tree, no fix applied twice, no approval replayed, the operator told what happened, and an
audit log that tells the whole story."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.demo.fake_messages_api import FakeMessagesApi
from bot.faults import ENV_VAR, Step, armed
from bot.models import ChangeStatus, IncidentState
from bot.store import Store, backups
from tests.fakes.daemon_proc import FAKE_CLAUDE_ENV, StartDaemon, healbot_run_fixture
from tests.fakes.world import (
    APP,
    FIX_ONLY,
    ScratchService,
    claude_via_fake_api,
    scratch_service,
    traceback_lines,
)
from tests.helpers import git, wait_until

pytestmark = pytest.mark.real_cli

__all__ = ["healbot_run_fixture"]  # the fixture

BUSY_INCIDENT = {
    IncidentState.OPEN,
    IncidentState.DIAGNOSING,
    IncidentState.AWAITING_APPROVAL,
    IncidentState.APPLYING,
    IncidentState.VERIFYING,
}
BUSY_CHANGE = {ChangeStatus.APPLYING, ChangeStatus.COMMITTED, ChangeStatus.RESTARTED}

# A kill while the fix's planned commit lands: the landing is finished, then restart and verify (before
# issue 11 a commit that landed was only reported, and a half-landed one was left staged).
LANDED = "the approved commit is now in place, nothing was repeated; restarting svc and verifying"
REVERTED = "interrupted while reverting change {commit}: the revert"
REVERT_STEPS = {
    Step.REVERT_PLANNED,
    Step.REVERT_WORKTREE_UPDATED,
    Step.REVERT_INDEX_UPDATED,
    Step.REVERT_MADE,
}

# What the restarted daemon must say, and how many commits healbot leaves (apply, apply + revert).
EXPECTED: dict[Step, tuple[str, int]] = {
    Step.INCIDENT_STORED: ("", 1),
    Step.DIAGNOSIS_STARTED: ("diagnosis was interrupted; it will run again", 1),
    Step.WORKTREE_PREPARED: ("diagnosis was interrupted; it will run again", 1),
    Step.PROPOSAL_STORED: ("--yes: approving #1", 1),
    Step.CARD_SENT: ("the daemon stopped before the fix was applied; nothing was changed", 0),
    Step.APPROVAL_RECORDED: ("the daemon stopped before the fix was applied; nothing was changed", 0),
    Step.COMMIT_PLANNED: (LANDED, 1),
    Step.WORKTREE_UPDATED: (LANDED, 1),
    Step.INDEX_UPDATED: (LANDED, 1),
    Step.COMMIT_MADE: (LANDED, 1),
    Step.RESTART_ISSUED: ("interrupted while verifying change {commit}: verifying again", 1),
    Step.VERIFICATION_RUNNING: ("interrupted while verifying change {commit}: verifying again", 1),
    Step.REVERT_PLANNED: (REVERTED, 2),
    Step.REVERT_WORKTREE_UPDATED: (REVERTED, 2),
    Step.REVERT_INDEX_UPDATED: (REVERTED, 2),
    Step.REVERT_MADE: (REVERTED, 2),
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeMessagesApi]:
    with FakeMessagesApi(structured=FIX_ONLY) as api:
        yield api


def write_config(service: ScratchService, fake: FakeMessagesApi, restart: str) -> Path:
    return service.write_config(
        healbot={"poll_interval_s": 0.05},
        claude=claude_via_fake_api(fake.url),
        tables={"policy": {"grace_after_restart_s": 0}},
        restart=[restart],
        health={"process": False, "window_s": 0.6, "settle_s": 0.05},
    )


def fault_env(fault: Step | None) -> dict[str, str | None]:
    return {**FAKE_CLAUDE_ENV, ENV_VAR: fault.value if fault is not None else None}


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
    tmp_path: Path, fake: FakeMessagesApi, healbot_run: StartDaemon, step: Step
) -> None:
    service = scratch_service(tmp_path)
    repo, log, db = service.repo, service.log, service.db_path
    # A failing restart makes health worse, which is the only way to reach the revert step.
    config = write_config(service, fake, "false" if step in REVERT_STEPS else "true")

    first = healbot_run(config, "--yes", env=fault_env(step))
    try:
        wait_until(db.exists, 20, what="the store")
        store = Store.open(db)
        wait_until(lambda: store.get_cursor(f"file:{log}"), 20, what="the first cursor")
        service.append(traceback_lines(repo))
        first.wait(timeout=60)
    finally:
        code = first.stop()
    assert code == -signal.SIGKILL, first.output()
    assert f"fault injected: SIGKILL at {step.value}" in first.output()

    note, commit_count = EXPECTED[step]
    write_config(service, fake, "true")
    second = healbot_run(config, "--yes", env=fault_env(None))
    try:
        wait_until(lambda: settled(store), 30, what=f"a settled state after {step.value}")
        second.wait_for(note.split("{")[0], 10, what=f"the note {note!r}")
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
    if step in REVERT_STEPS:
        assert text == APP
    git_dir = repo / ".git"
    assert not (git_dir / "index.lock").exists() and not (git_dir / "REVERT_HEAD").exists()
    assert not list(git_dir.glob("healbot-index-*")), "no staged index of healbot's left behind"

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
