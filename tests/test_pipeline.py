"""The whole loop through the real pipeline: a real git repo, a real log file, the real claude binary against
the fake Messages API, the real healers and the `command` service manager, the real SQLite store."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from bot.models import (
    Change,
    ChangeStatus,
    Decision,
    DecisionAction,
    IncidentState,
    Proposal,
    ProposalStatus,
)
from tests.fakes.world import APP, FIX, RESTART, World, make_world, traceback_lines
from tests.helpers import git

pytestmark = pytest.mark.real_cli


__all__ = ["FIX", "World", "make_world", "traceback_lines"]  # shared with the playbook and breaker tests


def approved_without_commit(world: World, proposal: Proposal) -> Change:
    """What a crash right after "approved" leaves behind: the decision and the change row, no commit."""
    world.store.close_proposal(
        proposal,
        ProposalStatus.APPROVED,
        Decision(proposal.token, "alice", DecisionAction.APPROVE, 1),
        incident_state=IncidentState.APPLYING,
        message="approved",
        at=time.time(),
    )
    return world.store.create_change(
        proposal, proposal.candidates[0], service="svc", approved_by="alice", at=time.time()
    )


async def test_approved_fix_is_committed_restarted_verified_and_kept(make_world) -> None:  # type: ignore[no-untyped-def]
    world: World = await make_world()
    incident, proposal = await world.incident_with_proposal()
    assert incident.state is IncidentState.AWAITING_APPROVAL
    assert incident.exception_type == "KeyError"
    assert [c.fix.kind.value for c in proposal.candidates] == ["patch", "restart"]
    assert "+    return PRICES.get(name, 0)" in proposal.candidates[0].diff
    assert proposal.base_commit == git(world.repo, "rev-parse", "HEAD")
    assert "Unknown items cost nothing" in world.out.getvalue()

    message = await world.approve(proposal)
    assert "approved #1 by alice" in message
    await world.pipeline.wait_idle()
    [result] = world.pipeline.results
    assert result.action == "kept", world.out.getvalue()
    commit = result.change.commit
    assert git(world.repo, "rev-parse", "HEAD") == commit
    body = git(world.repo, "log", "-1", "--format=%B")
    assert f"Healbot-Incident: {incident.id}" in body
    assert f"Healbot-Digest: {proposal.candidates[0].digest}" in body
    assert "Approved-By: alice" in body
    assert "PRICES.get(name, 0)" in (world.repo / "app.py").read_text()
    assert world.store.incident(incident.id).state is IncidentState.RESOLVED
    assert world.store.change(result.change.id).status is ChangeStatus.KEPT
    # exactly one diagnosis for the incident
    assert len(world.store.diagnoses(incident.id)) == 1


async def test_a_second_press_does_nothing_and_says_who_acted(make_world) -> None:  # type: ignore[no-untyped-def]
    world: World = await make_world()
    _, proposal = await world.incident_with_proposal()
    await world.approve(proposal, actor="alice")
    second = await world.approve(proposal, actor="bob")
    assert "already approved by alice" in second
    await world.pipeline.wait_idle()
    assert len(world.pipeline.results) == 1
    assert git(world.repo, "rev-list", "--count", "HEAD") == "2"


async def test_the_repo_moved_so_the_approval_is_void_and_it_re_diagnoses(make_world) -> None:  # type: ignore[no-untyped-def]
    world: World = await make_world()
    incident, proposal = await world.incident_with_proposal()
    (world.repo / "NOTES.md").write_text("operator's own commit\n")
    git(world.repo, "add", "NOTES.md")
    git(world.repo, "commit", "-q", "-m", "operator change")
    manual_head = git(world.repo, "rev-parse", "HEAD")

    message = await world.approve(proposal)
    assert "the repo moved" in message and "re-diagnosing" in message
    await world.pipeline.wait_idle()
    assert git(world.repo, "rev-parse", "HEAD") == manual_head  # nothing applied
    assert world.store.proposal(proposal.id).status is ProposalStatus.STALE
    fresh = world.store.latest_proposal(incident.id)
    assert fresh is not None and fresh.id != proposal.id
    assert fresh.base_commit == manual_head
    assert world.pipeline.results == []


async def test_an_expired_proposal_is_never_applied(make_world) -> None:  # type: ignore[no-untyped-def]
    world: World = await make_world()
    incident, proposal = await world.incident_with_proposal()
    world.clock.offset = 2 * 3600
    message = await world.approve(proposal)
    assert "expired" in message
    assert world.store.proposal(proposal.id).status is ProposalStatus.EXPIRED
    assert world.store.incident(incident.id).state is IncidentState.EXPIRED
    assert git(world.repo, "rev-list", "--count", "HEAD") == "1"


async def test_expiry_job_reminds_once_then_expires(make_world) -> None:  # type: ignore[no-untyped-def]
    world: World = await make_world()
    _, proposal = await world.incident_with_proposal()
    world.clock.offset = proposal.expires_at - time.time() - 60
    await world.pipeline.expire_due()
    await world.pipeline.expire_due()
    assert world.out.getvalue().count("reminder:") == 1
    world.clock.offset += 120
    await world.pipeline.expire_due()
    assert world.store.proposal(proposal.id).status is ProposalStatus.EXPIRED
    assert "expired without a decision: nothing was applied" in world.out.getvalue()


async def test_reject_closes_the_incident_and_applies_nothing(make_world) -> None:  # type: ignore[no-untyped-def]
    world: World = await make_world()
    incident, proposal = await world.incident_with_proposal()
    result = await world.pipeline.decide(Decision(proposal.token, "alice", DecisionAction.REJECT))
    assert result.accepted
    assert world.store.incident(incident.id).state is IncidentState.REJECTED
    late = await world.approve(proposal, actor="bob")
    assert "already rejected by alice" in late
    assert git(world.repo, "rev-list", "--count", "HEAD") == "1"


async def test_an_unknown_token_changes_nothing(make_world) -> None:  # type: ignore[no-untyped-def]
    world: World = await make_world()
    _, proposal = await world.incident_with_proposal()
    result = await world.pipeline.decide(Decision(proposal.token.upper(), "alice", DecisionAction.APPROVE, 1))
    assert not result.accepted and "unknown proposal" in result.message
    assert world.store.proposal(proposal.id).status is ProposalStatus.PENDING


async def test_invalid_llm_answer_is_recorded_and_nothing_is_proposed(make_world) -> None:  # type: ignore[no-untyped-def]
    bad = {
        "summary": "x",
        "candidates": [{"title": "t", "rationale": "r", "risk": "extreme", "kind": "patch", "edits": []}],
    }
    world: World = await make_world(answer=bad)
    await world.settle(traceback_lines(world.repo))
    [incident] = world.store.incidents()
    assert incident.state is IncidentState.DIAGNOSIS_FAILED
    assert incident.error and "diagnosis failed" in incident.error
    assert world.store.latest_proposal(incident.id) is None
    assert "diagnosis failed" in world.out.getvalue()


async def test_a_fix_whose_old_text_is_missing_is_dropped_with_a_reason(make_world) -> None:  # type: ignore[no-untyped-def]
    wrong = dict(FIX, edits=[{"path": "app.py", "old": "return PRICE[name]", "new": "return 0"}])
    world: World = await make_world(answer={"summary": "s", "candidates": [wrong, RESTART]})
    _, proposal = await world.incident_with_proposal()
    assert [c.fix.kind.value for c in proposal.candidates] == ["restart"]
    assert proposal.candidates[0].fix.rank == 1
    assert "dropped" in proposal.summary and "not found" in proposal.summary


async def test_a_dirty_tree_is_refused_and_the_operators_work_is_untouched(make_world) -> None:  # type: ignore[no-untyped-def]
    world: World = await make_world()
    incident, proposal = await world.incident_with_proposal()
    (world.repo / "app.py").write_text(APP + "# operator's uncommitted edit\n")
    refused = await world.approve(proposal)
    await world.pipeline.wait_idle()
    assert "uncommitted changes" in refused and "press Approve again" in refused
    assert world.pipeline.results == [] and world.store.changes() == []
    assert (world.repo / "app.py").read_text().endswith("# operator's uncommitted edit\n")
    assert git(world.repo, "stash", "list") == ""
    assert git(world.repo, "rev-list", "--count", "HEAD") == "1"
    assert world.store.incident(incident.id).state is IncidentState.AWAITING_APPROVAL  # approvable again


async def test_health_worse_reverts_exactly_the_commit(make_world) -> None:  # type: ignore[no-untyped-def]
    world: World = await make_world()
    incident, proposal = await world.incident_with_proposal()
    await world.approve(proposal)
    deadline = time.monotonic() + 20
    while "verifying" not in world.out.getvalue():
        assert time.monotonic() < deadline, world.out.getvalue()
        await asyncio.sleep(0.02)
    world.append(traceback_lines(world.repo, exc="NameError: name 'PRICE' is not defined", func="total2"))
    await world.pipeline.wait_idle()
    [result] = world.pipeline.results
    assert result.action == "reverted", world.out.getvalue()
    change = world.store.change(result.change.id)
    assert change.status is ChangeStatus.REVERTED and change.revert_commit
    assert git(world.repo, "rev-parse", "HEAD") == change.revert_commit
    assert git(world.repo, "rev-parse", "HEAD~1") == change.commit
    assert (world.repo / "app.py").read_text() == APP
    assert world.store.incident(incident.id).state is IncidentState.REVERTED


async def test_a_failed_restart_counts_as_worse_and_reverts(make_world) -> None:  # type: ignore[no-untyped-def]
    world: World = await make_world(restart='["false"]')
    _, proposal = await world.incident_with_proposal()
    await world.approve(proposal)
    await world.pipeline.wait_idle()
    [result] = world.pipeline.results
    assert result.action == "reverted"
    assert "restart failed" in result.detail
    assert (world.repo / "app.py").read_text() == APP


async def test_paused_means_nothing_is_applied(make_world) -> None:  # type: ignore[no-untyped-def]
    world: World = await make_world()
    _, proposal = await world.incident_with_proposal()
    world.store.set_setting("paused_until", "inf", actor="alice", at=time.time())
    message = await world.approve(proposal)
    assert "paused" in message
    assert world.store.proposal(proposal.id).status is ProposalStatus.PENDING
    assert git(world.repo, "rev-list", "--count", "HEAD") == "1"


async def test_a_crash_before_the_commit_is_reported_and_never_repeated(make_world) -> None:  # type: ignore[no-untyped-def]
    world: World = await make_world()
    incident, proposal = await world.incident_with_proposal()
    change = approved_without_commit(world, proposal)
    notes = await world.pipeline.recover()
    assert any("nothing was changed" in n for n in notes)
    assert world.store.change(change.id).status is ChangeStatus.FAILED
    assert world.store.incident(incident.id).state is IncidentState.NEEDS_HUMAN
    assert git(world.repo, "rev-list", "--count", "HEAD") == "1"


async def test_a_crash_after_the_commit_is_reported_and_not_applied_twice(make_world) -> None:  # type: ignore[no-untyped-def]
    world: World = await make_world()
    _, proposal = await world.incident_with_proposal()
    change = approved_without_commit(world, proposal)
    candidate = proposal.candidates[0]
    healer = world.pipeline.healers[candidate.fix.kind]
    runtime = world.pipeline.services["svc"]
    applied = healer.apply(
        runtime.heal_ctx, candidate, proposal.base_commit, {"Healbot-Digest": candidate.digest}
    )
    notes = await world.pipeline.recover()
    assert any(f"committed as {applied.commit[:10]}" in n for n in notes)
    recovered = world.store.change(change.id)
    assert recovered.status is ChangeStatus.NEEDS_HUMAN and recovered.commit == applied.commit
    assert git(world.repo, "rev-list", "--count", "HEAD") == "2"


async def test_many_errors_make_one_incident_and_one_diagnosis(make_world) -> None:  # type: ignore[no-untyped-def]
    world: World = await make_world()
    await world.settle("".join(traceback_lines(world.repo, exc=f"KeyError: 'item-{i}'") for i in range(20)))
    for _ in range(3):
        world.append(traceback_lines(world.repo))
        await world.pipeline.poll_once()
        await world.pipeline.poll_once()
    await world.pipeline.wait_idle()
    [incident] = world.store.incidents()
    assert incident.count == 23
    assert len(world.store.diagnoses(incident.id)) == 1
    assert len(world.fake.message_requests()) == 1


async def test_a_high_risk_fix_needs_two_different_approvers(make_world) -> None:  # type: ignore[no-untyped-def]
    risky = dict(FIX, risk="high")
    world: World = await make_world(answer={"summary": "s", "candidates": [risky]})
    world.pipeline.config = dataclasses.replace(
        world.pipeline.config,
        approval=dataclasses.replace(world.pipeline.config.approval, second_approver_for_high_risk=True),
    )
    _, proposal = await world.incident_with_proposal()
    first = await world.approve(proposal, actor="alice")
    assert "approval 1 of 2 by alice" in first
    again = await world.approve(proposal, actor="alice")
    assert "a second, different approver is needed" in again
    await world.pipeline.wait_idle()
    assert world.pipeline.results == []
    assert world.store.proposal(proposal.id).status is ProposalStatus.PENDING
    second = await world.approve(proposal, actor="bob")
    assert "approved #1 by bob" in second
    await world.pipeline.wait_idle()
    assert [r.action for r in world.pipeline.results] == ["kept"]


async def test_a_failed_diagnosis_note_names_the_error_itself(make_world) -> None:  # type: ignore[no-untyped-def]
    """Regression (found by the README walkthrough): with claude missing, the chat got only
    "#1 shop: diagnosis failed: …", and no card ever said which error it was about."""
    world: World = await make_world(answer={"summary": "x", "candidates": "not a list"})
    await world.settle(traceback_lines(world.repo))
    [incident] = world.store.incidents()
    said = world.out.getvalue()
    note = said[said.index(f"#{incident.id} {incident.service}: ") :]
    assert incident.title and incident.title[:40] in note.split("diagnosis failed")[0], said
