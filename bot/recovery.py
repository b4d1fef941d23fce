"""Crash recovery: after a restart of the daemon, resume what is safe and report the rest. Never repeats an
apply: a change's fate is read from the store (the commit planned before the repo was touched) and from
the commit trailers in the repo.

Every state an incident or change can be found in at start is resumed or reported:
- a diagnosis (DIAGNOSING) runs again; an OPEN incident is diagnosed when due;
- a change APPLYING with a planned commit: that landing is finished (the operator approved that digest),
  then the service is restarted and verified; refused (nothing touched) when someone else changed the
  paths meanwhile; without a planned commit nothing was touched: reported;
- a change COMMITTED or RESTARTED: verified again, or its planned revert finished (the verdict was worse);
- an incident APPLYING, VERIFYING or AWAITING_APPROVAL with nothing to drive it (no live change, no
  pending proposal): reported and opened again, so its error can be diagnosed and proposed again.
- at rest, nothing to do: NEEDS_HUMAN (a person was told when it got there), DIAGNOSIS_FAILED (its
  retries are scheduled in the store), the closed states; changes KEPT, REVERTED, FAILED, NEEDS_HUMAN.
`sweep` repeats the last check while the daemon runs, so no fingerprint stays wedged in a busy state.
An interrupted change resumes with the steps of `bot.flow.apply`, run in the pipeline's background tasks.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from bot import gitinfo
from bot.errors import HealbotError
from bot.flow import apply
from bot.interfaces import CommitHealer
from bot.models import (
    Change,
    ChangeStatus,
    FixKind,
    HealthSnapshot,
    Incident,
    IncidentState,
    ProposalStatus,
)

if TYPE_CHECKING:
    from bot.pipeline import FlowResult, Pipeline, ServiceRuntime


async def recover(pipeline: Pipeline) -> list[str]:
    """After a restart: resume what is safe, report the rest. Never repeats an apply."""
    notes: list[str] = []
    now = pipeline.clock.now()
    interrupted: set[int] = set()
    for incident in pipeline.store.incidents_in([IncidentState.DIAGNOSING]):
        interrupted.add(incident.id)
        pipeline.store.set_state(
            incident.id, IncidentState.OPEN, at=now, detail="diagnosis interrupted by a restart"
        )
        notes.append(f"#{incident.id}: diagnosis was interrupted; it will run again")
    reverting = set()
    for change in pipeline.store.unlanded_reverts():
        reverting.add(change.id)
        notes.append(await _recover_revert(pipeline, change))
    for change in pipeline.store.changes(statuses=[ChangeStatus.APPLYING], limit=1000):
        notes.append(await _recover_applying(pipeline, change))
    for change in pipeline.store.changes(
        statuses=[ChangeStatus.COMMITTED, ChangeStatus.RESTARTED], limit=1000
    ):
        if change.id not in reverting:
            notes.append(await _recover_verifying(pipeline, change))
    reopened = _reopen_undriven(pipeline, recovering=True)
    interrupted.update(i.id for i, _ in reopened)
    notes.extend(note for _, note in reopened)
    for note in notes:
        await pipeline.channel.notify(note)
    for proposal in pipeline.store.pending_proposals():
        await pipeline.channel.present(pipeline.store.incident(proposal.incident_id), proposal)
    for incident in pipeline.store.incidents_in([IncidentState.OPEN]):
        if incident.id in interrupted:
            _rediagnose_interrupted(pipeline, incident)
        else:
            pipeline.maybe_diagnose(incident)  # an incident stored just before the stop is not forgotten
    return notes


_LIVE_CHANGE = (ChangeStatus.APPLYING, ChangeStatus.COMMITTED, ChangeStatus.RESTARTED)
_DRIVEN_BY_A_CHANGE = (IncidentState.APPLYING, IncidentState.VERIFYING)
# Every state is in exactly one of these (tests hold a new state to that): resumed or reported at start
# (and by `sweep`), or at rest.
BUSY_INCIDENT_STATES = frozenset(
    {IncidentState.OPEN, IncidentState.DIAGNOSING, IncidentState.AWAITING_APPROVAL, *_DRIVEN_BY_A_CHANGE}
)
AT_REST_INCIDENT_STATES = frozenset(IncidentState) - BUSY_INCIDENT_STATES
LIVE_CHANGE_STATUSES = frozenset(_LIVE_CHANGE)


async def sweep(pipeline: Pipeline) -> list[str]:
    """While running: an incident in a busy state that nothing drives any more is reported and opened
    again (then diagnosed when due), so its fingerprint can never stay wedged."""
    reopened = _reopen_undriven(pipeline, recovering=False)
    for incident, note in reopened:
        await pipeline.channel.notify(note)
        pipeline.maybe_diagnose(pipeline.store.incident(incident.id))
    return [note for _, note in reopened]


def _reopen_undriven(pipeline: Pipeline, *, recovering: bool) -> list[tuple[Incident, str]]:
    """Incidents APPLYING/VERIFYING without a live change, AWAITING_APPROVAL without a pending proposal,
    DIAGNOSING without a diagnosis running (while running only): back to OPEN, each with its note."""
    store = pipeline.store
    now = pipeline.clock.now()
    live = {c.incident_id for c in store.changes(statuses=_LIVE_CHANGE, limit=10_000)}
    pending = {p.incident_id for p in store.pending_proposals()}
    busy = [*_DRIVEN_BY_A_CHANGE, IncidentState.AWAITING_APPROVAL]
    if not recovering:
        busy.append(IncidentState.DIAGNOSING)
    reopened: list[tuple[Incident, str]] = []
    for incident in store.incidents_in(busy):
        why = _undriven(pipeline, incident, live, pending)
        if why is None:
            continue
        current = store.incident(incident.id)
        if current.state is not incident.state:
            continue  # it moved on meanwhile: driven after all
        store.set_state(incident.id, IncidentState.OPEN, at=now, detail=why)
        reopened.append((incident, f"#{incident.id} {incident.service}: {why}; it will be diagnosed again"))
    return reopened


def _undriven(pipeline: Pipeline, incident: Incident, live: set[int], pending: set[int]) -> str | None:
    """Why nothing drives this busy incident any more, or None when something still does."""
    state = incident.state
    if state in _DRIVEN_BY_A_CHANGE and incident.id not in live:
        runtime = pipeline.services.get(incident.service)
        if runtime is not None and runtime.repo_lock.locked():
            return None  # a change of this service is being applied right now
        latest = pipeline.store.latest_proposal(incident.id)
        approved = latest is not None and latest.status is ProposalStatus.APPROVED
        if state is IncidentState.APPLYING and approved:
            return "it was approved, but no change was ever started for it (the daemon stopped): nothing was applied"
        return f"it was left {state.value} with no change in progress: nothing is being applied"
    if state is IncidentState.AWAITING_APPROVAL and incident.id not in pending:
        return "it was awaiting approval, but no proposal is open for it any more"
    if state is IncidentState.DIAGNOSING and not pipeline.is_diagnosing(incident.id):
        return "its diagnosis stopped without a result"
    return None


def _rediagnose_interrupted(pipeline: Pipeline, incident: Incident) -> None:
    """An interrupted diagnosis runs again at once: its throttle was taken by the run that never ended."""
    if pipeline.hold_reason() is not None or pipeline.is_muted(incident.fingerprint):
        return
    pipeline.start_diagnosis(incident.id, f"diagnose-{incident.id}")


async def _finish_landing(
    pipeline: Pipeline, runtime: ServiceRuntime, healer: CommitHealer, change: Change, planned: str
) -> str:
    """The fix's commit was planned (its id stored) before the repo was touched: finish landing exactly
    it, then restart and verify as after any commit; refuse, touching nothing, if someone else wrote."""
    sha = planned[:10]
    try:
        async with runtime.repo_lock:
            await asyncio.to_thread(healer.land, runtime.heal_ctx, planned)
    except HealbotError as exc:
        text = (
            f"#{change.incident_id}: the daemon stopped while applying the fix {sha}; it could not be "
            f"finished: {pipeline.scrub(str(exc))}"
        )
        pipeline.store.update_change(
            change.id,
            ChangeStatus.FAILED,
            at=pipeline.clock.now(),
            incident_state=IncidentState.NEEDS_HUMAN,
            detail=text,
        )
        return text
    committed = pipeline.store.update_change(
        change.id,
        ChangeStatus.COMMITTED,
        at=pipeline.clock.now(),
        commit=planned,
        incident_state=IncidentState.VERIFYING,
        detail=f"landing of {sha} finished after a restart",
    )
    before = pipeline.store.baseline(change.id)
    if before is None:
        return await _recover_verifying(pipeline, committed)
    incident = pipeline.store.incident(change.incident_id)
    pipeline.spawn(
        _resume_verify(pipeline, runtime, incident, committed, before, True), f"verify-{change.id}"
    )
    return (
        f"#{change.incident_id}: the daemon stopped while applying the fix {sha}; the approved commit is "
        f"now in place, nothing was repeated; restarting {change.service} and verifying"
    )


async def _recover_revert(pipeline: Pipeline, change: Change) -> str:
    """A revert was planned (the verdict was worse, or an operator asked): it must land."""
    _, planned = pipeline.store.planned_commits(change.id)
    assert planned is not None
    runtime = pipeline.services.get(change.service)
    healer = pipeline.healers.get(change.kind)
    sha = (change.commit or "the change")[:10]
    error = "the service is no longer configured"
    if runtime is not None and isinstance(healer, CommitHealer):
        try:
            async with runtime.repo_lock:
                await asyncio.to_thread(healer.land, runtime.heal_ctx, planned)
        except HealbotError as exc:
            error = pipeline.scrub(str(exc))
        else:
            pipeline.store.update_change(
                change.id,
                ChangeStatus.REVERTED,
                at=pipeline.clock.now(),
                revert_commit=planned,
                incident_state=IncidentState.REVERTED,
                detail="revert finished after a restart",
            )
            pipeline.spawn(_restart_after_recovered_revert(pipeline, runtime), f"restart-{change.id}")
            return (
                f"#{change.incident_id}: interrupted while reverting change {sha}: the revert {planned[:10]} "
                f"is now in place; nothing was repeated; restarting {change.service}"
            )
    text = (
        f"#{change.incident_id}: interrupted while reverting change {sha}: the revert could not be "
        f"finished ({error}); the change is still live: revert it by hand"
    )
    pipeline.store.plan_commit(change.id, None, revert=True, at=pipeline.clock.now())
    pipeline.store.update_change(
        change.id,
        ChangeStatus.NEEDS_HUMAN,
        at=pipeline.clock.now(),
        incident_state=IncidentState.NEEDS_HUMAN,
        detail=text,
    )
    return text


async def _recover_verifying(pipeline: Pipeline, change: Change) -> str:
    """A change committed before the stop: if its revert landed, record it; else verify it again."""
    now = pipeline.clock.now()
    runtime = pipeline.services.get(change.service)
    sha = (change.commit or "the change")[:10]
    before = pipeline.store.baseline(change.id)
    revert_commit = None
    if runtime is not None and change.commit:
        revert_commit = await asyncio.to_thread(
            gitinfo.commit_with_trailer, runtime.cfg.repo, "Healbot-Revert-Of", change.commit
        )
    if runtime is not None and revert_commit:
        pipeline.store.update_change(
            change.id,
            ChangeStatus.REVERTED,
            at=now,
            revert_commit=revert_commit,
            incident_state=IncidentState.REVERTED,
            detail="revert found after a restart",
        )
        pipeline.spawn(_restart_after_recovered_revert(pipeline, runtime), f"restart-{change.id}")
        return (
            f"#{change.incident_id}: interrupted while reverting change {sha}: the revert "
            f"{revert_commit[:10]} was already made; nothing was repeated; restarting {change.service}"
        )
    if runtime is None or before is None:
        text = (
            f"#{change.incident_id}: verification of {sha} was interrupted by a restart; "
            f"the change is in place; check the service; Keep or Revert on the card (/revert {change.id}; on the host: healbot revert {change.id})"
        )
        pipeline.store.update_change(
            change.id,
            ChangeStatus.NEEDS_HUMAN,
            at=now,
            incident_state=IncidentState.NEEDS_HUMAN,
            detail=text,
        )
        return text
    incident = pipeline.store.incident(change.incident_id)
    needs_restart = change.status is ChangeStatus.COMMITTED
    pipeline.spawn(
        _resume_verify(pipeline, runtime, incident, change, before, needs_restart), f"verify-{change.id}"
    )
    return f"#{change.incident_id}: interrupted while verifying change {sha}: verifying again"


async def _resume_verify(
    pipeline: Pipeline,
    runtime: ServiceRuntime,
    incident: Incident,
    change: Change,
    before: HealthSnapshot,
    restart: bool,
) -> FlowResult:
    async with runtime.repo_lock:
        result = await apply.restart_and_verify(pipeline, runtime, incident, change, before, restart=restart)
    pipeline.results.append(result)
    return result


async def _restart_after_recovered_revert(pipeline: Pipeline, runtime: ServiceRuntime) -> None:
    async with runtime.repo_lock:
        error = await apply.restart_service(pipeline, runtime)
    if error is not None:
        await pipeline.channel.notify(
            f"{runtime.cfg.name}: restart after the recovered revert failed: {error}"
        )


async def _recover_applying(pipeline: Pipeline, change: Change) -> str:
    now = pipeline.clock.now()
    runtime = pipeline.services.get(change.service)
    planned, _ = pipeline.store.planned_commits(change.id)
    healer = pipeline.healers.get(change.kind)
    if planned and runtime is not None and isinstance(healer, CommitHealer):
        return await _finish_landing(pipeline, runtime, healer, change, planned)
    digest = pipeline.store.change_digest(change.id)
    commit = None
    if runtime is not None and change.kind in (FixKind.PATCH, FixKind.REVERT_COMMIT):
        commit = await asyncio.to_thread(
            gitinfo.commit_with_trailer, runtime.cfg.repo, "Healbot-Digest", digest
        )
    if commit:
        text = (
            f"#{change.incident_id}: the fix was committed as {commit[:10]} but the daemon stopped before the restart; "
            f"nothing was repeated; restart the service and check it; Keep or Revert on the card (/revert {change.id}; on the host: healbot revert {change.id})"
        )
        pipeline.store.update_change(
            change.id,
            ChangeStatus.NEEDS_HUMAN,
            at=now,
            commit=commit,
            incident_state=IncidentState.NEEDS_HUMAN,
            detail=text,
        )
    else:
        text = f"#{change.incident_id}: the daemon stopped before the fix was applied; nothing was changed"
        if change.kind in (FixKind.RESTART, FixKind.RUNBOOK):
            text = f"#{change.incident_id}: the daemon stopped during a {change.kind.value}; it may or may not have run; nothing was repeated"
        pipeline.store.update_change(
            change.id, ChangeStatus.FAILED, at=now, incident_state=IncidentState.NEEDS_HUMAN, detail=text
        )
    return text
