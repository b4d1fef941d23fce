"""Apply, restart, verify, keep or revert: from an approved candidate to a kept, reverted or escalated change.

Health is measured before the apply (the baseline is stored before anything changes) and over a window
after the restart; a worse verdict reverts exactly the change's commit. Callers hold the repo lock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from bot import faults, policy
from bot.errors import DirtyTreeError, HealbotError, HealerError, StaleProposalError
from bot.faults import Step
from bot.flow.context import LOGGER_NAME, Flow, FlowResult, ServiceRuntime
from bot.flow.gates import RESTART_EVENT_PREFIX
from bot.health import probe, snapshot, verdict
from bot.interfaces import CommitHealer, Healer
from bot.models import (
    AppliedChange,
    Candidate,
    Change,
    ChangeStatus,
    HealthSnapshot,
    Incident,
    IncidentState,
    Outcome,
    Proposal,
    Verdict,
)

log = logging.getLogger(LOGGER_NAME)


async def apply_and_verify(
    flow: Flow,
    runtime: ServiceRuntime,
    incident: Incident,
    proposal: Proposal,
    candidate: Candidate,
    change: Change,
) -> FlowResult:
    cfg = runtime.cfg
    await flow.poll_once()  # read what was logged until now: it belongs to "before"
    now = flow.clock.now()
    last_seen = flow.store.incident(incident.id).last_seen
    before = await _snapshot(flow, runtime, policy.baseline_start(now, cfg.health.window_s, last_seen), now)
    flow.store.save_baseline(change.id, before)
    healer = flow.healers[candidate.fix.kind]
    trailers = {
        "Healbot-Incident": str(incident.id),
        "Healbot-Fingerprint": incident.fingerprint,
        "Healbot-Digest": candidate.digest,
        "Approved-By": change.approved_by,
    }
    await flow.channel.progress(incident, f"applying #{candidate.fix.rank}: {candidate.fix.title}")
    try:
        applied = await _apply(flow, runtime, healer, candidate, proposal.base_commit, trailers, change)
    except (DirtyTreeError, StaleProposalError, HealerError) as exc:
        detail = f"not applied: {flow.scrub(str(exc))}"
        return await _settle(
            flow, incident, change, ChangeStatus.FAILED, IncidentState.NEEDS_HUMAN, None, "failed", detail
        )
    commit = applied.commit
    faults.hit(Step.COMMIT_MADE)
    change = flow.store.update_change(
        change.id,
        ChangeStatus.COMMITTED,
        at=flow.clock.now(),
        commit=commit,
        incident_state=IncidentState.VERIFYING,
        detail=applied.detail or (commit or ""),
    )
    return await restart_and_verify(flow, runtime, incident, change, before, restart=True)


async def _apply(
    flow: Flow,
    runtime: ServiceRuntime,
    healer: Healer,
    candidate: Candidate,
    base_commit: str,
    trailers: dict[str, str],
    change: Change,
) -> AppliedChange:
    """A commit is planned, its id stored, then landed: a kill in between leaves a step recovery knows."""
    if not isinstance(healer, CommitHealer):
        return await asyncio.to_thread(healer.apply, runtime.heal_ctx, candidate, base_commit, trailers)
    planned = await asyncio.to_thread(healer.plan, runtime.heal_ctx, candidate, base_commit, trailers)
    sha = await _land(flow, runtime, healer, change, planned, revert=False)
    stats = candidate.stats
    return AppliedChange(sha, f"committed {sha[:10]}: {stats.files} file(s), +{stats.added} -{stats.removed}")


async def undo(flow: Flow, runtime: ServiceRuntime, change: Change, trailers: dict[str, str]) -> str:
    """Revert exactly the change's commit: planned, its id stored, then landed (like `_apply`)."""
    healer = flow.healers[change.kind]
    assert change.commit is not None
    if not isinstance(healer, CommitHealer):
        return await asyncio.to_thread(healer.undo, runtime.heal_ctx, change.commit, trailers)
    planned = await asyncio.to_thread(healer.plan_undo, runtime.heal_ctx, change.commit, trailers)
    return await _land(flow, runtime, healer, change, planned, revert=True)


async def _land(
    flow: Flow, runtime: ServiceRuntime, healer: CommitHealer, change: Change, planned: str, *, revert: bool
) -> str:
    flow.store.plan_commit(change.id, planned, revert=revert, at=flow.clock.now())
    faults.hit(Step.REVERT_PLANNED if revert else Step.COMMIT_PLANNED)
    try:
        return await asyncio.to_thread(healer.land, runtime.heal_ctx, planned, _checkpoint(revert))
    except HealbotError:
        # refused or backed out, not landed: nothing is left for a restart to finish. Anything else
        # (a cancel while the thread still lands) keeps the plan, so a restart finishes or refuses it.
        flow.store.plan_commit(change.id, None, revert=revert, at=flow.clock.now())
        raise


def _checkpoint(revert: bool) -> Callable[[str], None]:
    steps = {
        "worktree_updated": Step.REVERT_WORKTREE_UPDATED if revert else Step.WORKTREE_UPDATED,
        "index_updated": Step.REVERT_INDEX_UPDATED if revert else Step.INDEX_UPDATED,
    }

    def hit(name: str) -> None:
        faults.hit(steps[name])

    return hit


async def restart_and_verify(
    flow: Flow,
    runtime: ServiceRuntime,
    incident: Incident,
    change: Change,
    before: HealthSnapshot,
    *,
    restart: bool,
) -> FlowResult:
    """From a committed change: restart (unless already done), watch health, keep or revert."""
    cfg = runtime.cfg
    commit = change.commit
    committed = f"committed {commit[:10]}" if commit else "applied (no commit)"
    restart_error = None
    if restart:
        await flow.channel.progress(incident, f"{committed} → restarting {cfg.name}")
        # what the old process logged while the change landed is read now, not counted as "after" it
        await flow.poll_once()
        restart_error = await restart_service(flow, runtime)
        faults.hit(Step.RESTART_ISSUED)
    if restart_error is None:
        change = flow.store.update_change(change.id, ChangeStatus.RESTARTED, at=flow.clock.now())
        await flow.channel.progress(incident, f"{committed} → verifying for {cfg.health.window_s:.0f} s")
        faults.hit(Step.VERIFICATION_RUNNING)
        after = await _observe_window(flow, runtime)
        outcome_verdict, reasons = verdict(before, after, incident.fingerprint)
    else:
        after = await _snapshot_now(flow, runtime)
        outcome_verdict, reasons = Verdict.WORSE, (f"restart failed: {restart_error}",)
    flow.store.record_outcome(
        Outcome(change.id, before, after, outcome_verdict, reasons), at=flow.clock.now()
    )
    if outcome_verdict is Verdict.WORSE:
        return await _revert(flow, runtime, incident, change, before, after, reasons)
    why = "; ".join(reasons)
    if outcome_verdict is Verdict.BETTER:
        text = f"kept {committed}: {outcome_verdict.value} ({why})"
        return await _settle(
            flow,
            incident,
            change,
            ChangeStatus.KEPT,
            IncidentState.RESOLVED,
            outcome_verdict,
            "kept",
            text,
            why,
        )
    text = f"{committed} kept for now, but the verdict is {outcome_verdict.value} ({why}): please decide: Keep, or Revert (/revert {change.id}; on the host: healbot revert {change.id})"
    return await _needs_human(flow, incident, change, outcome_verdict, text, why)


async def restart_service(flow: Flow, runtime: ServiceRuntime) -> str | None:
    """Restart through the manager, unless the manager is already fighting a crash loop.
    The problem (scrubbed), or None when the service was restarted."""
    service = runtime.cfg.name
    try:
        status = await asyncio.to_thread(runtime.manager.status)
    except HealbotError as exc:
        log.warning("status of %s before restart: %s", service, exc)
    else:
        storm = policy.manager_storm_reason(status.state, status.detail)
        if storm is not None:
            return flow.scrub(storm)
    now = flow.clock.now()
    flow.last_restart[service] = now
    flow.store.audit("healbot", RESTART_EVENT_PREFIX + service, "restart issued", at=now)
    try:
        await asyncio.to_thread(runtime.manager.restart, runtime.cfg.health.settle_s)
    except HealbotError as exc:  # RestartFailed included
        return flow.scrub(str(exc))
    return None


async def revert_by_operator(flow: Flow, change_id: int, actor: str) -> str:
    """Operator-requested undo of a healbot commit: exactly that commit, then restart."""
    change = flow.store.change(change_id)
    if change is None or change.commit is None:
        raise HealbotError(f"change #{change_id} does not exist or made no commit")
    if change.revert_commit:
        raise HealbotError(f"change #{change_id} was already reverted by {change.revert_commit[:10]}")
    runtime = flow.runtime(change.service)
    async with runtime.repo_lock:
        revert_commit = await undo(
            flow, runtime, change, {"Healbot-Incident": str(change.incident_id), "Approved-By": actor}
        )
        flow.store.update_change(
            change.id,
            ChangeStatus.REVERTED,
            at=flow.clock.now(),
            revert_commit=revert_commit,
            incident_state=IncidentState.REVERTED,
            detail=f"reverted by {actor}",
        )
        restart_error = await restart_service(flow, runtime)
    suffix = "" if restart_error is None else f"; restart failed: {restart_error}"
    return f"reverted {change.commit[:10]} with {revert_commit[:10]}{suffix}"


async def _revert(
    flow: Flow,
    runtime: ServiceRuntime,
    incident: Incident,
    change: Change,
    before: HealthSnapshot,
    after: HealthSnapshot,
    reasons: tuple[str, ...],
) -> FlowResult:
    why = "; ".join(reasons)
    if change.commit is None:
        text = f"health got worse ({why}) and there is no commit to revert: please look"
        return await _needs_human(flow, incident, change, Verdict.WORSE, text, why)
    await flow.channel.progress(incident, f"worse ({why}) → reverting {change.commit[:10]}")
    trailers = {"Healbot-Incident": str(incident.id), "Healbot-Revert-Reason": why[:200]}
    try:
        revert_commit = await undo(flow, runtime, change, trailers)
        faults.hit(Step.REVERT_MADE)
    except HealbotError as exc:
        text = f"health got worse ({why}) and the revert failed: {flow.scrub(str(exc))}; please look now"
        return await _needs_human(flow, incident, change, Verdict.WORSE, text, text)
    change = flow.store.update_change(
        change.id,
        ChangeStatus.REVERTED,
        at=flow.clock.now(),
        revert_commit=revert_commit,
        incident_state=IncidentState.REVERTED,
        detail=why,
    )
    restart_error = await restart_service(flow, runtime)
    if restart_error is None:
        recovered = await _observe_window(flow, runtime)
        state = "service back up" if recovered.process_up is not False else "service still down"
    else:
        recovered = await _snapshot_now(flow, runtime)
        state = f"restart after revert failed: {restart_error}"
    _close_incidents_caused_by(flow, change, recovered)
    text = (
        f"reverted {change.commit[:10] if change.commit else ''} with {revert_commit[:10]}: {why}; {state} "
        f"(errors before {before.errors_total}, with the fix {after.errors_total}, after the revert {recovered.errors_total})"
    )
    await flow.channel.progress(incident, text)
    await flow.channel.progress(incident, what_next_after_revert(flow, incident))
    return FlowResult(incident.id, change, Verdict.WORSE, "reverted", text)


def what_next_after_revert(flow: Flow, incident: Incident) -> str:
    """The original error comes back with the revert; say when healbot looks at it again by itself."""
    last = flow.store.last_diagnosis_at(incident.service, incident.fingerprint)
    again_at = (flow.clock.now() if last is None else last) + flow.config.diagnose_every_s
    return (
        f"next: if the error comes back it is diagnosed again from {time.strftime('%H:%M', time.localtime(again_at))}; "
        f"Diagnose again (or /diagnose {incident.service}) proposes anew now, without this fix"
    )


async def _needs_human(
    flow: Flow, incident: Incident, change: Change, outcome: Verdict, text: str, detail: str
) -> FlowResult:
    return await _settle(
        flow,
        incident,
        change,
        ChangeStatus.NEEDS_HUMAN,
        IncidentState.NEEDS_HUMAN,
        outcome,
        "needs_human",
        text,
        detail,
    )


async def _settle(
    flow: Flow,
    incident: Incident,
    change: Change,
    status: ChangeStatus,
    incident_state: IncidentState,
    outcome: Verdict | None,
    action: str,
    text: str,
    detail: str | None = None,
) -> FlowResult:
    """The last move of a run: the change's final state is stored first, then said, then returned."""
    settled = flow.store.update_change(
        change.id,
        status,
        at=flow.clock.now(),
        incident_state=incident_state,
        detail=text if detail is None else detail,
    )
    await flow.channel.progress(incident, text)
    return FlowResult(incident.id, settled, outcome, action, text)


def _close_incidents_caused_by(flow: Flow, change: Change, after_revert: HealthSnapshot) -> None:
    """Incidents that first appeared while a change was live and stopped after its revert were caused
    by it; close them so they are not diagnosed as problems of their own."""
    still_seen = {key for key, count in after_revert.errors_by_fingerprint if count > 0}
    for incident in flow.store.incidents(open_only=True, service=change.service):
        if (
            incident.id != change.incident_id
            and incident.state is IncidentState.OPEN
            and incident.first_seen >= change.created_at
            and incident.fingerprint not in still_seen
        ):
            flow.store.set_state(
                incident.id,
                IncidentState.RESOLVED,
                at=flow.clock.now(),
                detail=f"appeared with change {change.id} and stopped after its revert",
            )


async def _snapshot(flow: Flow, runtime: ServiceRuntime, start: float, end: float) -> HealthSnapshot:
    result = await probe(runtime.cfg.health, runtime.manager)
    errors = flow.ledger.counts(runtime.cfg.name, start, end)
    return snapshot(result, errors, end, end - start)


async def _snapshot_now(flow: Flow, runtime: ServiceRuntime) -> HealthSnapshot:
    return await _snapshot(flow, runtime, flow.clock.now(), flow.clock.now())


async def _observe_window(flow: Flow, runtime: ServiceRuntime) -> HealthSnapshot:
    start = flow.clock.now()
    await asyncio.sleep(runtime.cfg.health.window_s)
    await flow.poll_once()
    return await _snapshot(flow, runtime, start, flow.clock.now())
