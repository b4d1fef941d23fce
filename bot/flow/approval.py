"""Decide: honour a person's decision only while it is still valid; otherwise say why and change nothing.

An approval is void when the proposal expired or was decided, the repo moved, the digest differs, a
breaker tripped, another process holds the repo, or healbot is paused. A refusal is recorded, never applied.
"""

from __future__ import annotations

import asyncio

from bot import faults, gitinfo, policy, repolock
from bot.errors import DirtyTreeError, HealbotError
from bot.faults import Step
from bot.flow.context import Flow, ServiceRuntime
from bot.interfaces import PreflightHealer
from bot.models import (
    Candidate,
    ChangeStatus,
    Decision,
    DecisionAction,
    DecisionResult,
    FixKind,
    Incident,
    IncidentState,
    Proposal,
    ProposalStatus,
    Risk,
)
from bot.render import hour_minute

FIRST_APPROVAL_PREFIX = "first_approval:"


async def decide(flow: Flow, decision: Decision) -> DecisionResult:
    now = flow.clock.now()
    proposal = flow.store.proposal_by_token(decision.proposal_token)
    if proposal is None:
        return _refuse(flow, None, decision, "unknown proposal: nothing was applied")
    if proposal.status is not ProposalStatus.PENDING:
        who = flow.store.decider(proposal.id)
        by = f" by {who[0]}" if who else ""
        return _refuse(flow, proposal, decision, f"already {proposal.status.value}{by}: nothing more to do")
    incident = flow.store.incident(proposal.incident_id)
    if now >= proposal.expires_at:
        await expire(flow, proposal, incident)
        return _refuse(
            flow, proposal, decision, "expired: nothing was applied; re-diagnose to get a fresh proposal"
        )
    if decision.action is DecisionAction.REJECT:
        msg = f"rejected by {decision.actor}"
        if await _close_and_say(
            flow, proposal, incident, ProposalStatus.REJECTED, decision, IncidentState.REJECTED, msg, now
        ):
            return DecisionResult(True, msg)
        return _already(flow, proposal, decision)
    if decision.action is DecisionAction.SNOOZE:
        return await _snooze(flow, proposal, incident, decision, now)
    return await _approve(flow, proposal, incident, decision, now)


async def _snooze(
    flow: Flow, proposal: Proposal, incident: Incident, decision: Decision, now: float
) -> DecisionResult:
    """Reminder and expiry move by the snooze time; the proposal stays approvable meanwhile."""
    until, expires_at = policy.snoozed(proposal, now)
    msg = (
        f"snoozed until {hour_minute(until)} by {decision.actor}: reminder and expiry moved "
        f"by {policy.SNOOZE_S / 3600:g} h (now expires {hour_minute(expires_at)})"
    )
    snoozed = flow.store.snooze_proposal(
        proposal, decision, until=until, expires_at=expires_at, message=msg, at=now
    )
    if snoozed is None:
        return _already(flow, proposal, decision)
    flow.deadlines_changed()
    await flow.channel.progress(incident, msg)
    return DecisionResult(True, msg)


async def keep_change(flow: Flow, change_id: int, actor: str) -> DecisionResult:
    """A person keeps a change whose verdict was left to them: recorded, audited, said on its card."""
    change = flow.store.change(change_id)
    if change is None:
        return DecisionResult(False, f"change {change_id} does not exist: nothing was done")
    if not policy.awaits_decision(change):
        return DecisionResult(False, f"change {change_id} is {change.status.value} already: nothing was done")
    now = flow.clock.now()
    msg = f"kept by {actor}: change {change.id} stays"
    flow.store.update_change(
        change.id, ChangeStatus.KEPT, at=now, incident_state=IncidentState.RESOLVED, detail=msg
    )
    flow.store.audit(actor, "change:kept_by_person", msg, at=now, incident_id=change.incident_id)
    await flow.channel.progress(flow.store.incident(change.incident_id), msg)
    return DecisionResult(True, msg)


async def expire(flow: Flow, proposal: Proposal, incident: Incident) -> None:
    msg = "expired without a decision: nothing was applied"
    await _close_and_say(
        flow, proposal, incident, ProposalStatus.EXPIRED, None, IncidentState.EXPIRED, msg, flow.clock.now()
    )


async def _close_and_say(
    flow: Flow,
    proposal: Proposal,
    incident: Incident,
    status: ProposalStatus,
    decision: Decision | None,
    incident_state: IncidentState,
    message: str,
    at: float,
) -> bool:
    """Close a pending proposal and say so; False (and nothing said) when someone else closed it first."""
    closed = flow.store.close_proposal(
        proposal, status, decision, incident_state=incident_state, message=message, at=at
    )
    if closed:
        await flow.channel.progress(incident, message)
    return closed


def _refuse(flow: Flow, proposal: Proposal | None, decision: Decision, message: str) -> DecisionResult:
    flow.store.record_refused_decision(proposal, decision, message, at=flow.clock.now())
    return DecisionResult(False, message)


def _already(flow: Flow, proposal: Proposal, decision: Decision) -> DecisionResult:
    who = flow.store.decider(proposal.id)
    by = f"{who[1]}d by {who[0]}" if who else "decided"
    return _refuse(flow, proposal, decision, f"already {by}: nothing more to do")


async def _approve(
    flow: Flow, proposal: Proposal, incident: Incident, decision: Decision, now: float
) -> DecisionResult:
    hold = flow.hold_reason()
    if hold is not None:
        return _refuse(flow, proposal, decision, hold)
    candidate = next((c for c in proposal.candidates if c.fix.rank == decision.rank), None)
    if candidate is None:
        return _refuse(flow, proposal, decision, f"there is no candidate #{decision.rank}")
    breaker = flow.breaker_reason(incident.service, incident.fingerprint, candidate.fix.kind)
    if breaker is not None:
        return _refuse(flow, proposal, decision, f"{breaker}: nothing was applied")
    if decision.digest is not None and decision.digest != candidate.digest:
        return _refuse(flow, proposal, decision, "the fix you saw is not the one stored: nothing was applied")
    runtime = flow.runtime(incident.service)
    locked = await _repo_locked(runtime, candidate.fix.kind)
    if locked is not None:
        return _refuse(
            flow,
            proposal,
            decision,
            f"{locked}: nothing was applied; the proposal stays open: approve again when the lock is gone",
        )
    dirty = await _work_in_progress(flow, runtime, candidate)
    if dirty is not None:
        return _refuse(
            flow,
            proposal,
            decision,
            f"{dirty}; then press Approve again (nothing was applied; the proposal stays open)",
        )
    head = await asyncio.to_thread(gitinfo.head, runtime.cfg.repo)
    if head != proposal.base_commit:
        msg = (
            f"the repo moved (HEAD {head[:10]}, proposal made at {proposal.base_commit[:10]}): re-diagnosing"
        )
        if flow.store.close_proposal(
            proposal, ProposalStatus.STALE, None, incident_state=IncidentState.OPEN, message=msg, at=now
        ):
            _refuse(flow, proposal, decision, msg)
            flow.spawn(flow.diagnose_incident(incident.id), f"rediagnose-{incident.id}")
            return DecisionResult(False, msg)
        return _already(flow, proposal, decision)
    quorum = await _second_approval_needed(flow, proposal, incident, candidate, decision)
    if quorum is not None:
        return quorum
    msg = f"approved #{candidate.fix.rank} by {decision.actor}"
    change = flow.store.approve_proposal(
        proposal, candidate, decision, service=incident.service, message=msg, at=now
    )
    if change is None:
        return _already(flow, proposal, decision)
    faults.hit(Step.APPROVAL_RECORDED)
    flow.spawn(flow.apply_and_verify(proposal, candidate, change), f"apply-{change.id}")
    return DecisionResult(True, f"{msg}: applying")


async def _work_in_progress(flow: Flow, runtime: ServiceRuntime, candidate: Candidate) -> str | None:
    """Uncommitted operator work where the change would go (scrubbed), checked before the approval is
    taken, so that "commit or discard them, then approve again" is possible on the same card."""
    healer = flow.healers.get(candidate.fix.kind)
    if not isinstance(healer, PreflightHealer):
        return None
    try:
        await asyncio.to_thread(healer.preflight, runtime.heal_ctx, candidate)
    except DirtyTreeError as exc:
        said = str(exc).replace(", then approve again", "")
        for root in {str(runtime.cfg.repo), str(runtime.cfg.repo.resolve())}:
            said = said.replace(f"{root}: ", "").replace(f"{root} ", "the repo ")  # the card has no room
        return flow.scrub(said)
    except HealbotError:
        return None  # anything else is the apply's to find and report, as before
    return None


async def _repo_locked(runtime: ServiceRuntime, kind: FixKind) -> str | None:
    """Another process holds a lock this change would need: refused before anything is touched."""
    if kind is FixKind.RESTART:
        return None
    return await asyncio.to_thread(
        repolock.lock_holder,
        runtime.cfg.repo,
        check_index_lock=kind is not FixKind.RUNBOOK,
        # a change of our own holds healbot's apply lock; this one then waits for it, as designed
        check_apply_lock=not runtime.repo_lock.locked(),
    )


async def _second_approval_needed(
    flow: Flow, proposal: Proposal, incident: Incident, candidate: Candidate, decision: Decision
) -> DecisionResult | None:
    """High-risk candidates may need two different approvers; the first press is recorded, not applied."""
    if not (flow.config.approval.second_approver_for_high_risk and candidate.fix.risk is Risk.HIGH):
        return None
    key = f"{FIRST_APPROVAL_PREFIX}{proposal.token}:{candidate.fix.rank}"
    first = flow.store.get_setting(key)
    if first is None:
        flow.store.set_setting(key, decision.actor, actor=decision.actor, at=flow.clock.now())
        msg = f"high-risk fix #{candidate.fix.rank}: approval 1 of 2 by {decision.actor}; a second approver must press Approve too"
        await flow.channel.progress(incident, msg)
        return DecisionResult(True, msg)
    if first == decision.actor:
        return _refuse(
            flow,
            proposal,
            decision,
            f"you already approved #{candidate.fix.rank}: a second, different approver is needed",
        )
    return None
