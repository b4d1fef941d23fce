"""Dependencies failing, through the real pipeline: Claude hanging, rate-limited or overloaded (the real claude
binary against the fake Messages API), the state database full, the repo locked by another git process.
Each is reported with its reason, nothing is half-written or half-applied, and work resumes when the fault
clears. Telegram unreachable is covered by tests/test_telegram_e2e.py."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from bot.errors import GitError
from bot.models import Fingerprint, IncidentState, ProposalStatus
from bot.playbooks import LABEL
from bot.repolock import APPLY_LOCK_NAME, lock_holder
from bot.store import Observation, Store
from tests.fakes.lock_holder import hold_flock, release
from tests.fakes.world import APP, World, console_daemon, start_world, traceback_lines
from tests.helpers import git, make_repo, wait_until
from tests.test_playbooks import commit

pytestmark = pytest.mark.real_cli

# long enough for the claude binary to print its first event on a busy machine (2 s was not, under load)
IDLE_TIMEOUT_S = 5


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    # API_TIMEOUT_MS longer than the idle watchdog: a hang is cut by healbot, not the CLI
    made = await start_world(tmp_path, idle_timeout_s=IDLE_TIMEOUT_S, api_timeout_ms="30000")
    assert made.config.claude.idle_timeout_s == IDLE_TIMEOUT_S
    try:
        yield made
    finally:
        await made.pipeline.cancel_all()
        made.fake.stop()
        made.store.close()


async def restart_daemon(world: World) -> None:
    """What a restart of the daemon keeps: the state database, nothing in memory."""
    await world.pipeline.cancel_all()
    world.store.close()
    world.daemon = await console_daemon(world.config, world.runner, world.out, world.clock)
    await world.pipeline.recover()


async def an_incident(world: World) -> int:
    await world.settle(traceback_lines(world.repo))
    [incident] = world.store.incidents()
    return incident.id


# --- Claude failing ------------------------------------------------------------------------------------


async def test_a_hanging_claude_is_cut_by_the_watchdog_reported_and_retried_even_across_a_restart(
    world: World,
) -> None:
    w = world
    w.fake.default_scenario = "hang"
    incident_id = await an_incident(w)
    said = w.out.getvalue()
    assert f"printed nothing for {IDLE_TIMEOUT_S}s (no-output watchdog)" in said, said
    assert "retry 1 of 3 in 60 s" in said
    assert w.store.incident(incident_id).state is IncidentState.DIAGNOSIS_FAILED
    assert w.store.latest_proposal(incident_id) is None  # no playbook applies: a running service, no suspect
    assert w.store.retry_attempts(incident_id) == 1

    await restart_daemon(w)
    await w.pipeline.expire_due()  # not due yet
    await w.pipeline.wait_idle()
    assert len(w.fake.message_requests()) == 1

    w.fake.default_scenario = "structured"  # Claude is back
    w.clock.offset += 61
    await w.pipeline.expire_due()
    await w.pipeline.wait_idle()
    assert len(w.fake.message_requests()) == 2
    proposal = w.store.latest_proposal(incident_id)
    assert proposal is not None and proposal.status is ProposalStatus.PENDING, w.out.getvalue()
    assert w.store.incident(incident_id).state is IncidentState.AWAITING_APPROVAL
    assert w.store.retry_attempts(incident_id) == 0


@pytest.mark.parametrize(("scenario", "reason"), [("rate_limited", "429"), ("overloaded", "529")])
async def test_a_rate_limited_or_overloaded_claude_is_reported_and_the_labelled_playbook_offered(
    world: World, scenario: str, reason: str
) -> None:
    w = world
    commit(w.repo, "lookup without default", APP + "\n# strict\n")
    w.fake.default_scenario = scenario
    incident_id = await an_incident(w)
    said = w.out.getvalue()
    assert "diagnosis failed" in said and reason in said, said
    proposal = w.store.latest_proposal(incident_id)
    assert proposal is not None, said
    assert "Deterministic playbooks are offered instead" in proposal.summary and reason in proposal.summary
    assert all(c.fix.title.startswith(LABEL) for c in proposal.candidates)
    assert w.store.incident(incident_id).state is IncidentState.AWAITING_APPROVAL
    assert w.store.retry_attempts(incident_id) == 0  # a person has something to decide on


async def test_retries_stop_after_three_and_say_so(world: World) -> None:
    w = world
    w.fake.default_scenario = "overloaded"
    incident_id = await an_incident(w)
    for _ in range(4):
        w.clock.offset += 3600
        await w.pipeline.expire_due()
        await w.pipeline.wait_idle()
    assert len(w.fake.message_requests()) == 4
    said = w.out.getvalue()
    assert [said.count(f"retry {n} of 3") for n in (1, 2, 3)] == [1, 1, 1]
    assert "4 diagnoses failed; no more retries" in said
    assert w.store.incident(incident_id).state is IncidentState.DIAGNOSIS_FAILED


def test_retries_are_kept_in_the_store_and_each_is_taken_once(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "state.db")
    try:
        fingerprint = Fingerprint("k" * 16, "svc", True, "KeyError", "KeyError: <str>")
        [ingested] = store.ingest(
            "src", "1", [Observation(fingerprint, "KeyError", 1.0)], max_samples=3, at=1.0
        )
        incident = ingested.incident.id
        assert store.retry_attempts(incident) == 0 and store.take_due_retries(1e12) == []
        store.schedule_retry(incident, 1, due_at=100.0, at=40.0)
        assert store.take_due_retries(99.0) == []
        assert store.take_due_retries(100.0) == [incident]
        assert store.take_due_retries(200.0) == []  # taken once
        assert store.retry_attempts(incident) == 1
        store.schedule_retry(incident, 2, due_at=300.0, at=200.0)
        assert store.retry_attempts(incident) == 2
        store.clear_retries(incident)
        assert store.retry_attempts(incident) == 0 and store.take_due_retries(1e12) == []
        events = [e.event for e in store.audit_log(incident_id=incident)]
        assert events.count("diagnosis_retry_scheduled") == 2
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            store.schedule_retry(incident + 1, 1, due_at=1.0, at=1.0)  # no such incident: nothing stored
        assert store.take_due_retries(1e12) == []
    finally:
        store.close()


# --- disk full -----------------------------------------------------------------------------------------


def fill_up(store: Store) -> sqlite3.Connection:
    """SQLite's own quota on the store's connection: no new page may be added, as on a full disk."""
    conn: sqlite3.Connection = store._conn  # the quota is per connection
    pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    conn.execute(f"PRAGMA max_page_count = {pages}")
    return conn


async def test_a_full_disk_is_reported_once_nothing_is_half_written_and_work_resumes(
    world: World,
) -> None:
    w = world
    cursor = w.store.get_cursor(f"file:{w.log}")
    assert cursor is not None
    audit_before = len(w.store.audit_log(limit=10_000))
    conn = fill_up(w.store)
    w.append("".join(traceback_lines(w.repo, f"KeyError: '{'x' * 3000}{n}'") for n in range(5)))
    for _ in range(3):
        await w.pipeline.poll_once()  # must not raise: the daemon keeps running
    await w.pipeline.wait_idle()
    said = w.out.getvalue()
    assert said.count("healbot cannot record new errors") == 1, said
    assert "database or disk is full" in said and "free disk space" in said
    assert w.store.incidents() == []
    assert len(w.store.audit_log(limit=10_000)) == audit_before
    assert w.store.get_cursor(f"file:{w.log}") == cursor
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert w.fake.message_requests() == ()

    conn.execute("PRAGMA max_page_count = 1073741823")  # space is back
    await w.pipeline.poll_once()
    await w.pipeline.poll_once()
    await w.pipeline.wait_idle()
    assert "the state database is writable again" in w.out.getvalue()
    incidents = w.store.incidents()
    assert sum(i.count for i in incidents) == 5, incidents  # every error logged meanwhile was counted once
    assert any(w.store.latest_proposal(i.id) is not None for i in incidents), w.out.getvalue()


# --- the repo locked by another git process --------------------------------------------------------------


@pytest.fixture
def hold_apply_lock(tmp_path: Path) -> Iterator[Callable[[Path], subprocess.Popen[str]]]:
    """Another process holding healbot's apply lock on a repo, ended by its pid in teardown."""
    started: list[subprocess.Popen[str]] = []

    def hold(repo: Path) -> subprocess.Popen[str]:
        proc = hold_flock(repo / ".git" / APPLY_LOCK_NAME)
        started.append(proc)
        return proc

    yield hold
    for proc in started:
        release(proc)


@pytest.mark.parametrize("lock", ["index.lock", APPLY_LOCK_NAME])
async def test_a_locked_repo_refuses_the_approval_keeps_the_proposal_and_applies_once_released(
    world: World, hold_apply_lock: Callable[[Path], subprocess.Popen[str]], lock: str
) -> None:
    w = world
    incident, proposal = await w.incident_with_proposal()
    holder = None
    if lock == "index.lock":
        (w.repo / ".git" / "index.lock").write_text("")
    else:
        holder = hold_apply_lock(w.repo)

    message = await w.approve(proposal)
    assert message.startswith("another git process holds ") and lock in message, message
    assert "the proposal stays open" in message
    assert w.store.proposal(proposal.id).status is ProposalStatus.PENDING
    assert w.store.incident(incident.id).state is IncidentState.AWAITING_APPROVAL
    assert w.store.changes(limit=10) == []
    assert git(w.repo, "rev-list", "--count", "HEAD") == "1"
    assert (w.repo / "app.py").read_text() == APP
    assert any(lock in e.detail for e in w.store.audit_log(incident_id=incident.id))

    if holder is None:
        (w.repo / ".git" / "index.lock").unlink()
    else:
        release(holder)
    message = await w.approve(proposal)
    assert message.endswith(": applying"), message
    await w.pipeline.wait_idle()
    assert [r.action for r in w.pipeline.results] == ["kept"], w.out.getvalue()
    assert git(w.repo, "rev-list", "--count", "HEAD") == "2"


def test_lock_holder_names_the_lock_and_ignores_what_it_is_told_to(
    tmp_path: Path, hold_apply_lock: Callable[[Path], subprocess.Popen[str]]
) -> None:
    repo = make_repo(tmp_path / "svc", {"app.py": APP})
    assert lock_holder(repo) is None
    (repo / ".git" / "index.lock").write_text("")
    assert str(repo / ".git" / "index.lock") in (lock_holder(repo) or "")
    assert lock_holder(repo, check_index_lock=False) is None  # a runbook does not touch the index
    (repo / ".git" / "index.lock").unlink()
    holder = hold_apply_lock(repo)
    assert APPLY_LOCK_NAME in (lock_holder(repo) or "")
    assert lock_holder(repo, check_apply_lock=False) is None  # our own change may hold it
    release(holder)
    assert wait_until(lambda: lock_holder(repo) is None, what="the lock released")


def test_lock_holder_on_something_that_is_not_a_repo_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="is not a git repo"):
        lock_holder(tmp_path)
