"""Issue 11, items 2 and 3: no approval lost and no half-applied fix or revert after a kill -9.

The daemon is a real `healbot run`, killed with SIGKILL from outside while one chosen git step blocks
(tests.fakes.blocking_git: no HEALBOT_FAULT, no help from the product), then started again. After the
restart the repo must be exactly before or after the step, the operator's own files intact, the incident
resumed or reported in the chat, no fix applied twice, and a later apply must work.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import recovery
from bot.demo.fake_messages_api import FakeMessagesApi
from bot.models import ChangeStatus, Decision, DecisionAction, IncidentState, ProposalStatus
from bot.store import MIGRATIONS, Store
from healers.git_repo import GitRepo
from tests.fakes.blocking_git import BlockingGit
from tests.fakes.daemon_proc import StartDaemon, healbot_run_fixture
from tests.fakes.world import APP, FIX_ONLY, World, make_world, scratch_service, traceback_lines
from tests.helpers import git, wait_until
from tests.test_faults import fault_env, healbot_commits, settled, write_config

pytestmark = pytest.mark.real_cli

__all__ = ["healbot_run_fixture", "make_world"]  # the fixtures

FIXED = APP.replace("return PRICES[name]", "return PRICES.get(name, 0)")
OPERATOR_FILE = "operator-notes.txt"
OPERATOR_TEXT = "my own work, not committed\n"
LANDED = "the approved commit is now in place, nothing was repeated; restarting svc and verifying"
NOT_APPLIED = "the daemon stopped before the fix was applied; nothing was changed"
REVERTED = "interrupted while reverting change"
VERIFYING = "interrupted while verifying change"
LATER_DIFF = (
    "diff --git a/later.txt b/later.txt\nnew file mode 100644\n--- /dev/null\n+++ b/later.txt\n"
    "@@ -0,0 +1 @@\n+later\n"
)

# (git step to die at, what the restarted daemon says, healbot commits after, app.py after)
APPLY_STEPS = [
    ("apply:--cached", NOT_APPLIED, 0, APP),
    ("commit-tree", NOT_APPLIED, 0, APP),
    ("commit-tree@after", NOT_APPLIED, 0, APP),
    ("update-index", LANDED, 1, FIXED),
    ("cat-file:--filters", LANDED, 1, FIXED),
    ("cat-file:--filters@after", LANDED, 1, FIXED),
    ("update-ref", LANDED, 1, FIXED),
    ("update-ref@after", LANDED, 1, FIXED),
]
REVERT_STEPS = [
    ("apply:--reverse", VERIFYING, 1, None),
    ("commit-tree#2", VERIFYING, 1, None),
    ("update-index#2", REVERTED, 2, APP),
    ("cat-file:--filters#2", REVERTED, 2, APP),
    ("cat-file:--filters#2@after", REVERTED, 2, APP),
    ("update-ref#2", REVERTED, 2, APP),
    ("update-ref#2@after", REVERTED, 2, APP),
]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeMessagesApi]:
    with FakeMessagesApi(structured=FIX_ONLY) as api:
        yield api


def kill_at_git_step(
    tmp_path: Path, fake: FakeMessagesApi, healbot_run: StartDaemon, steps: str, *, revert: bool
) -> tuple[Path, Store, str]:
    """A daemon approves (--yes) and applies the fix (and reverts it, its restart failing, with
    `revert`); at `steps` it is SIGKILLed from outside, then started again until it settles.
    Returns the repo, the store and what the second daemon said."""
    service = scratch_service(tmp_path)
    repo = service.repo
    (repo / OPERATOR_FILE).write_text(OPERATOR_TEXT)
    config = write_config(service, fake, "false" if revert else "true")
    blocker = BlockingGit(tmp_path / "blocking-git")
    first = healbot_run(config, "--yes", env={**fault_env(None), **blocker.env(steps)})
    try:
        wait_until(service.db_path.exists, 20, what="the store")
        store = Store.open(service.db_path)
        wait_until(lambda: store.get_cursor(f"file:{service.log}"), 20, what="the first cursor")
        service.append(traceback_lines(repo))
        git_pid = blocker.wait_reached(90, what=f"the daemon to reach git step {steps}")
        os.kill(first.proc.pid, signal.SIGKILL)  # kill -9 from outside, while git blocks
        assert first.proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        first.close()
        if (blocker.dir / "reached").exists():
            blocker.kill(int((blocker.dir / "reached").read_text()))
    blocker.kill(git_pid)

    write_config(service, fake, "true")
    second = healbot_run(config, "--yes", env=fault_env(None))
    try:
        wait_until(lambda: settled(store), 40, what=f"a settled state after a kill at {steps}")
    finally:
        assert second.stop() == 0, second.output()
    return repo, store, second.output()


def assert_exactly_before_or_after(repo: Path, app_text: str | None, commits: int) -> None:
    """The repo as before or after a step: only the operator's own file differs, nothing of ours left."""
    assert git(repo, "status", "--porcelain") == f"?? {OPERATOR_FILE}"
    assert (repo / OPERATOR_FILE).read_text() == OPERATOR_TEXT
    git_dir = repo / ".git"
    leftovers = [
        git_dir / "index.lock",
        git_dir / "REVERT_HEAD",
        git_dir / "refs" / "heads" / "main.lock",
        git_dir / "HEAD.lock",
    ]
    assert not [p for p in leftovers if p.exists()]
    assert not list(git_dir.glob("healbot-index-*"))
    assert not list(repo.glob(".*.healbot-*.tmp"))
    found = healbot_commits(repo)
    assert len(found) == commits, found  # never applied twice
    head = git(repo, "rev-parse", "HEAD")
    assert head == (found[0][0] if found else git(repo, "rev-list", "--max-parents=0", "HEAD"))
    if app_text is not None:
        assert (repo / "app.py").read_text() == app_text
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1


def assert_a_later_apply_works(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    grepo = GitRepo(repo)
    with grepo.lock(10):
        later = grepo.apply_and_commit(LATER_DIFF, head, "later\n\nHealbot-Test: later\n")
    assert git(repo, "rev-parse", "HEAD") == later
    assert git(repo, "status", "--porcelain") == f"?? {OPERATOR_FILE}"


@pytest.mark.parametrize(
    ("steps", "note", "commits", "app_text"), APPLY_STEPS, ids=[s[0] for s in APPLY_STEPS]
)
def test_kill_at_each_git_step_of_the_apply(
    tmp_path: Path,
    fake: FakeMessagesApi,
    healbot_run: StartDaemon,
    steps: str,
    note: str,
    commits: int,
    app_text: str,
) -> None:
    repo, store, said = kill_at_git_step(tmp_path, fake, healbot_run, steps, revert=False)
    assert note in said, said
    assert_exactly_before_or_after(repo, app_text, commits)
    assert len(store.changes(limit=10)) == 1
    assert_a_later_apply_works(repo)
    store.close()


@pytest.mark.parametrize(
    ("steps", "note", "commits", "app_text"), REVERT_STEPS, ids=[s[0] for s in REVERT_STEPS]
)
def test_kill_at_each_git_step_of_the_revert(
    tmp_path: Path,
    fake: FakeMessagesApi,
    healbot_run: StartDaemon,
    steps: str,
    note: str,
    commits: int,
    app_text: str | None,
) -> None:
    repo, store, said = kill_at_git_step(tmp_path, fake, healbot_run, steps, revert=True)
    assert note in said, said
    assert_exactly_before_or_after(repo, app_text, commits)
    [change] = store.changes(limit=10)
    if commits == 2:
        assert change.revert_commit == git(repo, "rev-parse", "HEAD")
    assert_a_later_apply_works(repo)
    store.close()


def test_apply_killed_after_staging_leaves_no_staged_fix(
    tmp_path: Path, fake: FakeMessagesApi, healbot_run: StartDaemon
) -> None:
    """The step after the fix reached the index: `git commit` before issue 11, the ref move now."""
    repo, store, said = kill_at_git_step(tmp_path, fake, healbot_run, "commit,update-ref", revert=False)
    assert_exactly_before_or_after(repo, FIXED, 1)
    assert LANDED in said, said
    assert_a_later_apply_works(repo)
    store.close()


def test_revert_killed_before_commit_does_not_block_the_next_revert(
    tmp_path: Path, fake: FakeMessagesApi, healbot_run: StartDaemon
) -> None:
    """The step after the revert reached the index: `git commit` before issue 11, the ref move now."""
    repo, store, said = kill_at_git_step(tmp_path, fake, healbot_run, "commit#2,update-ref#2", revert=True)
    assert REVERTED in said, said
    assert_exactly_before_or_after(repo, APP, 2)
    [change] = store.changes(limit=10)
    assert change.revert_commit is not None
    grepo = GitRepo(repo)
    with grepo.lock(10):
        again = grepo.revert(change.revert_commit, {"Healbot-Test": "the next revert"})
    assert git(repo, "rev-parse", "HEAD") == again and (repo / "app.py").read_text() == FIXED
    store.close()


async def test_approval_killed_between_close_and_change_is_not_lost(make_world) -> None:  # type: ignore[no-untyped-def]
    """What a kill between the two statements of the old approval left: the proposal approved and the
    incident APPLYING, but no change. The restart reports it and diagnoses the error again."""
    world: World = await make_world()
    incident, proposal = await world.incident_with_proposal()
    world.store.close_proposal(
        proposal,
        ProposalStatus.APPROVED,
        Decision(proposal.token, "alice", DecisionAction.APPROVE, 1),
        incident_state=IncidentState.APPLYING,
        message="approved #1 by alice",
        at=time.time(),
    )
    notes = await world.pipeline.recover()
    await world.pipeline.wait_idle()
    assert any(f"#{incident.id}" in n and "nothing was applied" in n for n in notes), notes
    assert "no change was ever started" in world.out.getvalue()
    after = world.store.incident(incident.id)
    assert after.state is IncidentState.AWAITING_APPROVAL, after  # proposed again
    fresh = world.store.latest_proposal(incident.id)
    assert fresh is not None and fresh.id != proposal.id and fresh.status is ProposalStatus.PENDING
    assert git(world.repo, "rev-list", "--count", "HEAD") == "1"


@pytest.mark.parametrize(
    "state", [IncidentState.APPLYING, IncidentState.VERIFYING, IncidentState.AWAITING_APPROVAL]
)
async def test_a_busy_incident_with_nothing_driving_it_is_reopened_by_the_sweep(make_world, state) -> None:  # type: ignore[no-untyped-def]
    """While the daemon runs: a busy state with no live change or pending proposal never wedges the error."""
    world: World = await make_world()
    incident, proposal = await world.incident_with_proposal()
    world.store.close_proposal(
        proposal, ProposalStatus.SUPERSEDED, None, incident_state=state, message="test", at=time.time()
    )
    await world.pipeline.expire_due()
    await world.pipeline.wait_idle()
    assert world.store.incident(incident.id).state in (IncidentState.OPEN, IncidentState.AWAITING_APPROVAL)
    assert f"#{incident.id} svc: it was" in world.out.getvalue()


def test_every_state_is_either_resumed_at_start_or_at_rest() -> None:
    """A state added later must be placed: resumed/reported by recovery, or deliberately at rest."""
    at_rest = {
        IncidentState.NEEDS_HUMAN,
        IncidentState.DIAGNOSIS_FAILED,
        *(s for s in IncidentState if not s.is_open),
    }
    assert at_rest == recovery.AT_REST_INCIDENT_STATES
    assert recovery.BUSY_INCIDENT_STATES | at_rest == set(IncidentState)
    final = {ChangeStatus.KEPT, ChangeStatus.REVERTED, ChangeStatus.FAILED, ChangeStatus.NEEDS_HUMAN}
    assert recovery.LIVE_CHANGE_STATUSES | final == set(ChangeStatus)
    assert not recovery.LIVE_CHANGE_STATUSES & final


async def test_the_approval_and_its_change_are_one_transaction(make_world) -> None:  # type: ignore[no-untyped-def]
    """approve_proposal writes both or nothing; a second approval of the same proposal writes nothing."""
    world: World = await make_world()
    _, proposal = await world.incident_with_proposal()
    decision = Decision(proposal.token, "alice", DecisionAction.APPROVE, 1)
    candidate = proposal.candidates[0]
    first = world.store.approve_proposal(
        proposal, candidate, decision, service="svc", message="ok", at=time.time()
    )
    second = world.store.approve_proposal(
        proposal, candidate, decision, service="svc", message="ok", at=time.time()
    )
    assert first is not None and second is None
    assert [c.id for c in world.store.changes(limit=10)] == [first.id]
    assert world.store.incident(proposal.incident_id).state is IncidentState.APPLYING


def test_a_version_6_database_migrates_to_the_latest_and_its_changes_have_no_plan(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    conn = sqlite3.connect(db, isolation_level=None)
    for script in MIGRATIONS[:6]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version = 6")
    conn.execute(
        "INSERT INTO incidents (service, fingerprint, title, state, first_seen, last_seen, count, samples)"
        " VALUES ('svc', 'k1', 'boom', 'applying', 1.0, 2.0, 7, '[\"s\"]')"
    )
    conn.execute(
        "INSERT INTO proposals (incident_id, token, base_commit, candidates, summary, created_at, expires_at,"
        " status) VALUES (1, 'tok', 'b', '[]', 'sum', 3.0, 9999.0, 'approved')"
    )
    conn.execute(
        "INSERT INTO changes (incident_id, proposal_id, rank, service, kind, digest, status, approved_by,"
        " created_at, updated_at) VALUES (1, 1, 1, 'svc', 'patch', 'd', 'applying', 'alice', 3.0, 3.0)"
    )
    conn.close()
    store = Store.open(db)
    assert store.schema_version() == len(MIGRATIONS) >= 9  # through 9, the planned commits
    assert store.planned_commits(1) == (None, None)
    store.plan_commit(1, "ab" * 20, revert=False, at=4.0)
    store.plan_commit(1, "cd" * 20, revert=True, at=5.0)
    assert store.planned_commits(1) == ("ab" * 20, "cd" * 20)
    assert [c.id for c in store.unlanded_reverts()] == [1]
    store.close()
