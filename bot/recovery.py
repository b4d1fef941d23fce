"""Crash recovery: after a restart of the daemon, resume what is safe and report the rest. Never repeats an
apply: a change's fate is read from the store and from the commit trailers in the repo.

An interrupted change resumes with the steps of `bot.flow.apply`, run in the pipeline's background tasks.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from bot import gitinfo
from bot.flow import apply
from bot.models import Change, ChangeStatus, FixKind, HealthSnapshot, Incident, IncidentState

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
    for change in pipeline.store.changes(statuses=[ChangeStatus.APPLYING], limit=1000):
        notes.append(await _recover_applying(pipeline, change))
    for change in pipeline.store.changes(
        statuses=[ChangeStatus.COMMITTED, ChangeStatus.RESTARTED], limit=1000
    ):
        notes.append(await _recover_verifying(pipeline, change))
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


def _rediagnose_interrupted(pipeline: Pipeline, incident: Incident) -> None:
    """An interrupted diagnosis runs again at once: its throttle was taken by the run that never ended."""
    if pipeline.hold_reason() is not None or pipeline.is_muted(incident.fingerprint):
        return
    pipeline.start_diagnosis(incident.id, f"diagnose-{incident.id}")


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
            f"the change is in place; check the service, revert with `healbot revert {change.id}`"
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
    digest = pipeline.store.change_digest(change.id)
    commit = None
    if runtime is not None and change.kind in (FixKind.PATCH, FixKind.REVERT_COMMIT):
        commit = await asyncio.to_thread(
            gitinfo.commit_with_trailer, runtime.cfg.repo, "Healbot-Digest", digest
        )
    if commit:
        text = (
            f"#{change.incident_id}: the fix was committed as {commit[:10]} but the daemon stopped before the restart; "
            f"nothing was repeated; restart the service and check it, or revert with `healbot revert {change.id}`"
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
