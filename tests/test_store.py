from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bot.errors import StoreError
from bot.models import (
    Candidate,
    ChangeStatus,
    Decision,
    DecisionAction,
    DiffStats,
    Edit,
    Fingerprint,
    Fix,
    FixKind,
    Frame,
    HealthSnapshot,
    IncidentState,
    Outcome,
    ProposalStatus,
    Risk,
    RunStats,
    Verdict,
)
from bot.store import MIGRATIONS, Observation, Store


def fp(key: str = "abc123", service: str = "web") -> Fingerprint:
    return Fingerprint(key, service, True, "KeyError", "KeyError: <str>", (Frame("app.py", 3, "total"),))


def candidate(rank: int = 1) -> Candidate:
    fix = Fix(rank, "Use get", "because", Risk.LOW, FixKind.PATCH, (Edit("app.py", "a[k]", "a.get(k)"),))
    return Candidate(fix, "--- a/app.py\n+++ b/app.py\n", "d" * 64, DiffStats(1, 1, 1), True, "ok")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "state" / "healbot.db")
    yield s
    s.close()


def test_wal_mode_and_schema_version(store: Store, tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "state" / "healbot.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.schema_version() == len(MIGRATIONS)


def test_reopening_does_not_migrate_again_and_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    s = Store.open(path)
    s.ingest("file:a", "c1", [Observation(fp(), "sample", 1.0)], max_samples=3, at=1.0)
    s.close()
    s = Store.open(path)
    assert [i.count for i in s.incidents()] == [1]
    assert s.get_cursor("file:a") == "c1"
    s.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this healbot"):
        Store.open(path)


def test_one_open_incident_per_fingerprint_with_capped_samples(store: Store) -> None:
    obs = [Observation(fp(), f"sample {i}", float(i)) for i in range(10)]
    first = store.ingest("file:a", "c1", obs[:1], max_samples=3, at=0.0)
    assert first[0].is_new
    again = store.ingest("file:a", "c2", obs[1:], max_samples=3, at=9.0)
    assert not again[0].is_new
    incident = again[0].incident
    assert incident.count == 10
    assert incident.samples == ("sample 0", "sample 1", "sample 2")
    assert incident.first_seen == 0.0 and incident.last_seen == 9.0
    assert incident.frames == (Frame("app.py", 3, "total"),)
    assert len(store.incidents()) == 1


def test_a_closed_incident_lets_a_new_one_open(store: Store) -> None:
    [ing] = store.ingest("file:a", "c1", [Observation(fp(), "s", 1.0)], max_samples=3, at=1.0)
    store.set_state(ing.incident.id, IncidentState.RESOLVED, at=2.0)
    [again] = store.ingest("file:a", "c2", [Observation(fp(), "s", 3.0)], max_samples=3, at=3.0)
    assert again.is_new and again.incident.id != ing.incident.id


def test_ingest_is_one_transaction(store: Store) -> None:
    bad = Observation(fp(), "x", 1.0)
    with pytest.raises(AttributeError):
        store.ingest("file:a", "c1", [bad, None], max_samples=3, at=1.0)  # type: ignore[list-item]
    assert store.incidents() == []
    assert store.get_cursor("file:a") is None


def test_proposal_decided_once_and_audited(store: Store) -> None:
    [ing] = store.ingest("file:a", "c", [Observation(fp(), "s", 1.0)], max_samples=3, at=1.0)
    store.begin_diagnosis(ing.incident.id, at=2.0)
    store.record_diagnosis(
        ing.incident.id, RunStats("claude-cli", 1.5, 0.01, 2, "sess"), summary="sum", at=3.0
    )
    proposal = store.create_proposal(
        ing.incident.id,
        base_commit="b" * 40,
        candidates=[candidate()],
        summary="sum",
        at=4.0,
        expires_at=100.0,
    )
    assert store.incident(ing.incident.id).state is IncidentState.AWAITING_APPROVAL
    loaded = store.proposal_by_token(proposal.token)
    assert loaded == proposal
    assert loaded.candidates[0].fix.edits == (Edit("app.py", "a[k]", "a.get(k)"),)
    decision = Decision(proposal.token, "alice", DecisionAction.APPROVE, 1)
    assert store.close_proposal(
        proposal,
        ProposalStatus.APPROVED,
        decision,
        incident_state=IncidentState.APPLYING,
        message="ok",
        at=5.0,
    )
    second = Decision(proposal.token, "bob", DecisionAction.APPROVE, 1)
    assert not store.close_proposal(
        proposal, ProposalStatus.APPROVED, second, incident_state=IncidentState.APPLYING, message="ok", at=6.0
    )
    assert store.decider(proposal.id) == ("alice", "approve")
    events = [e.event for e in store.audit_log(incident_id=ing.incident.id)]
    assert events[0] == "incident_opened"
    assert "proposal:approved" in events
    assert store.diagnoses(ing.incident.id)[0][0].session_id == "sess"


def test_change_lifecycle_and_outcome(store: Store) -> None:
    [ing] = store.ingest("file:a", "c", [Observation(fp(), "s", 1.0)], max_samples=3, at=1.0)
    proposal = store.create_proposal(
        ing.incident.id, base_commit="b" * 40, candidates=[candidate()], summary="", at=2.0, expires_at=9.0
    )
    change = store.create_change(proposal, proposal.candidates[0], service="web", approved_by="alice", at=3.0)
    assert change.status is ChangeStatus.APPLYING
    assert store.change_digest(change.id) == "d" * 64
    change = store.update_change(
        change.id, ChangeStatus.COMMITTED, at=4.0, commit="c" * 40, incident_state=IncidentState.VERIFYING
    )
    assert change.commit == "c" * 40
    before = HealthSnapshot(4.0, True, 200, 3.0, None, 5, (("abc123", 5),), 30.0)
    after = HealthSnapshot(40.0, True, 200, 2.0, None, 0, (), 30.0)
    store.record_outcome(Outcome(change.id, before, after, Verdict.BETTER, ("gone",)), at=41.0)
    assert store.outcomes(change.id)[0] == Outcome(change.id, before, after, Verdict.BETTER, ("gone",))
    store.update_change(change.id, ChangeStatus.KEPT, at=42.0, incident_state=IncidentState.RESOLVED)
    assert store.incident(ing.incident.id).state is IncidentState.RESOLVED
    assert "kept" in store.past_outcomes("web", "abc123")[0]


def test_the_audit_log_is_append_only(store: Store, tmp_path: Path) -> None:
    store.audit("alice", "paused", "1h", at=1.0)
    conn = sqlite3.connect(tmp_path / "state" / "healbot.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit SET actor = 'mallory'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit")
    assert store.audit_log()[0].actor == "alice"


def test_settings_round_trip(store: Store) -> None:
    store.set_setting("paused_until", "123.0", actor="alice", at=1.0)
    assert store.get_setting("paused_until") == "123.0"
    store.set_setting("paused_until", None, actor="alice", at=2.0)
    assert store.get_setting("paused_until") is None


def test_outbox_is_idempotent_per_chat_and_key(store: Store) -> None:
    first = store.outbox_put("42", "card:1", "card", '{"text": "a"}', incident_id=None, at=1.0)
    again = store.outbox_put("42", "card:1", "card", '{"text": "b"}', incident_id=None, at=2.0)
    assert again == first
    other_chat = store.outbox_put("43", "card:1", "card", "{}", incident_id=None, at=2.0)
    assert other_chat.id != first.id
    assert [i.id for i in store.outbox_pending()] == [first.id, other_chat.id]
    store.outbox_mark_failed(first.id, "telegram unreachable")
    store.outbox_mark_sent(first.id, 777, at=3.0)
    assert store.outbox_by_message("42", 777).key == "card:1"
    assert [i.id for i in store.outbox_pending()] == [other_chat.id]
    assert store.outbox_item("42", "card:1").attempts == 2


def test_an_unredacted_placeholder_sample_is_counted_but_never_stored(store: Store) -> None:
    """A flood's extra records reach the store with an empty sample (they were not redacted): they count."""
    store.ingest("file:a", "c1", [Observation(fp(), "kept", 1.0)], max_samples=3, at=1.0)
    [again] = store.ingest("file:a", "c2", [Observation(fp(), "", 2.0)] * 4, max_samples=3, at=2.0)
    assert again.incident.count == 5
    assert again.incident.samples == ("kept",)


def test_a_refused_decision_is_never_the_decider(store: Store) -> None:
    [ing] = store.ingest("file:a", "c", [Observation(fp(), "s", 1.0)], max_samples=3, at=1.0)
    proposal = store.create_proposal(
        ing.incident.id, base_commit="b" * 40, candidates=[candidate()], summary="s", at=2.0, expires_at=99.0
    )
    refused = Decision(proposal.token, "mallory", DecisionAction.APPROVE, 1)
    store.record_refused_decision(proposal, refused, "not an approver", at=3.0)
    assert store.decider(proposal.id) is None
    approved = Decision(proposal.token, "alice", DecisionAction.APPROVE, 1)
    assert store.close_proposal(
        proposal,
        ProposalStatus.APPROVED,
        approved,
        incident_state=IncidentState.APPLYING,
        message="ok",
        at=4.0,
    )
    assert store.decider(proposal.id) == ("alice", "approve")
    assert "decision_refused" in [e.event for e in store.audit_log(incident_id=ing.incident.id)]


def test_a_tallied_observation_is_one_write_counting_all_its_records(store: Store) -> None:
    """Issue 13: a flood reaches the store tallied by fingerprint: one observation holds the count and a
    few distinct samples; first_seen stays that of the first write."""
    tallied = Observation(fp(), "a", 1.0, count=5, more_samples=("b", "a", "c", "d"))
    [first] = store.ingest("file:a", "c1", [tallied], max_samples=3, at=1.0)
    assert (first.is_new, first.incident.count, first.incident.samples) == (True, 5, ("a", "b", "c"))
    [again] = store.ingest("file:a", "c2", [Observation(fp(), "e", 4.0, count=2)], max_samples=3, at=4.0)
    assert (again.incident.count, again.incident.first_seen, again.incident.last_seen) == (7, 1.0, 4.0)
    assert again.incident.samples == ("a", "b", "c")
