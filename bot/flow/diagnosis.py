"""Diagnose: read-only evidence → ranked fixes → candidates materialised in scratch worktrees → a proposal.

When Claude cannot help, the deterministic playbooks that apply are offered instead; when none applies,
the diagnosis is retried after a backoff. Fixes reverted before for the same error are not proposed again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

from bot import faults, gitinfo, playbooks, policy
from bot.diagnose import diagnose
from bot.errors import DiagnosisError, HealbotError, RunnerError
from bot.evidence import collect_evidence
from bot.faults import Step
from bot.flow import gates, sessions
from bot.flow.context import LOGGER_NAME, Flow, ServiceRuntime
from bot.mcp_server import looked_at
from bot.mcp_server.scope import ToolScope, scope_for
from bot.models import Candidate, Diagnosis, Evidence, Fix, Incident, IncidentState, Proposal, RunStats
from bot.recent import most_frequent_error
from bot.store import Observation

log = logging.getLogger(LOGGER_NAME)

DIAGNOSIS_RETRIES = 3
REVERTED_SHOWN = 3  # reverted fixes named in the prompt, the newest
REVERTED_DIFF_CHARS = 1500
DIAGNOSE_AGAIN_PREFIX = "diagnose_again:"  # setting per reverted incident: who pressed Diagnose again
_DIAGNOSABLE_AGAIN = frozenset({IncidentState.OPEN, IncidentState.DIAGNOSIS_FAILED})


async def run_diagnosis(flow: Flow, incident_id: int, actor: str) -> Proposal | None:
    incident = flow.store.begin_diagnosis(incident_id, at=flow.clock.now(), actor=actor)
    faults.hit(Step.DIAGNOSIS_STARTED)
    runtime = flow.runtime(incident.service)
    cfg = runtime.cfg
    await flow.channel.progress(incident, "diagnosing (read-only)…")
    reverted = flow.store.reverted_candidates(incident.service, incident.fingerprint)
    past = [*flow.store.past_outcomes(incident.service, incident.fingerprint), *_reverted_lines(reverted)]
    try:
        evidence = await asyncio.to_thread(
            collect_evidence,
            incident,
            repo=cfg.repo,
            allowed_paths=cfg.allowed_paths,
            runbooks=list(cfg.runbooks),
            past_outcomes=past,
            redact=flow.scrub,
        )
        tools = scope_for(
            cfg,
            incident,
            manager_logs=await asyncio.to_thread(_manager_logs, runtime),
            config_path=flow.config.path,
            db_path=flow.config.db_path,
        )
        result = await _diagnose_in_session(flow, incident, evidence, tools)
    except (RunnerError, DiagnosisError, HealbotError) as exc:
        message = f"diagnosis failed: {flow.scrub(str(exc))}"
        stats = exc.stats if isinstance(exc, RunnerError | DiagnosisError) else None
        flow.store.record_diagnosis(
            incident_id,
            stats if isinstance(stats, RunStats) else RunStats(flow.runner.name, 0.0),
            summary="",
            at=flow.clock.now(),
            error=message,
        )
        # No card exists yet: the note names the error itself, so the chat knows what failed to diagnose.
        await flow.channel.notify(
            f"#{incident_id} {incident.service}: {flow.scrub(incident.title)[:200]}\n{message}"
        )
        offered = await _offer_playbooks(flow, runtime, incident, message)
        if offered is None:
            await _schedule_retry(flow, incident)
        return offered
    flow.store.clear_retries(incident_id)
    flow.store.record_diagnosis(incident_id, result.stats, summary=result.summary, at=flow.clock.now())

    fresh = _not_reverted_before(flow, incident, result.fixes)
    candidates, problems = await _materialise(flow, runtime, fresh, evidence.head)
    repeated = [c for c in candidates if _same_diff_as(c, reverted)]
    candidates = _ranked([c for c in candidates if c not in repeated])
    problems += [
        f"#{f.rank} {flow.scrub(f.title)[:60]}: was applied before and reverted; not proposed again"
        for f in [*(f for f in result.fixes if f not in fresh), *(c.fix for c in repeated)]
    ]
    faults.hit(Step.WORKTREE_PREPARED)
    if not candidates:
        message = "no usable fix: " + "; ".join(problems) if problems else "no fix was proposed"
        flow.store.set_state(
            incident_id, IncidentState.DIAGNOSIS_FAILED, at=flow.clock.now(), error=flow.scrub(message)
        )
        await flow.channel.notify(f"#{incident_id} {incident.service}: {flow.scrub(message)}")
        return None
    hold = flow.hold_reason()
    if hold is not None:
        flow.store.set_state(
            incident_id, IncidentState.OPEN, at=flow.clock.now(), detail=f"not proposed: {hold}"
        )
        return None
    summary = result.summary
    if result.stats.tool_calls:
        summary += "\nlooked at: " + looked_at.summary(result.stats.tool_calls)
    if problems:
        summary += "\n(dropped: " + "; ".join(problems) + ")"
    proposal = _store_proposal(flow, incident_id, evidence.head, candidates, summary)
    faults.hit(Step.PROPOSAL_STORED)
    await flow.channel.present(flow.store.incident(incident_id), proposal)
    faults.hit(Step.CARD_SENT)
    return proposal


async def _offer_playbooks(
    flow: Flow, runtime: ServiceRuntime, incident: Incident, reason: str
) -> Proposal | None:
    """Claude could not help: offer the deterministic playbooks that apply, labelled as such."""
    cfg = runtime.cfg
    state = None
    try:
        state = (await asyncio.to_thread(runtime.manager.status)).state
    except HealbotError as exc:
        log.warning("status of %s for the playbooks: %s", cfg.name, exc)
    fixes = await asyncio.to_thread(playbooks.playbook_fixes, incident, repo=cfg.repo, state=state)
    fixes = _not_reverted_before(flow, incident, fixes)
    if not fixes or flow.hold_reason() is not None:
        return None
    head = await asyncio.to_thread(gitinfo.head, cfg.repo)
    candidates, problems = await _materialise(flow, runtime, fixes, head)
    if not candidates:
        log.info("no playbook applies to #%d: %s", incident.id, "; ".join(problems))
        return None
    summary = f"{reason}. Deterministic playbooks are offered instead: no LLM was involved in these."
    proposal = _store_proposal(flow, incident.id, head, candidates, summary)
    await flow.channel.present(flow.store.incident(incident.id), proposal)
    return proposal


def _reverted_lines(reverted: list[Candidate]) -> list[str]:
    """The fixes applied and reverted for this error, diff and all, so that Claude does not offer them
    again (the bot refuses them anyway)."""
    return [
        f"TRIED AND REVERTED, do not propose again: {c.fix.kind.value} {c.fix.title!r}"
        + (f"; its diff was:\n{c.diff[:REVERTED_DIFF_CHARS]}" if c.diff else "")
        for c in reverted[-REVERTED_SHOWN:]
    ]


def _same_diff_as(candidate: Candidate, reverted: list[Candidate]) -> bool:
    """The change itself, however the edits were worded: what a reverted candidate's diff changed."""
    if not candidate.diff:
        return False
    body = _diff_body(candidate.diff)
    return any(old.diff and _diff_body(old.diff) == body for old in reverted)


def _diff_body(diff: str) -> list[str]:
    # blob ids and hunk positions move with the base commit; the changed lines do not
    return [
        "@@" if line.startswith("@@") else line for line in diff.splitlines() if not line.startswith("index ")
    ]


def _ranked(candidates: list[Candidate]) -> list[Candidate]:
    return [
        dataclasses.replace(c, fix=dataclasses.replace(c.fix, rank=rank))
        for rank, c in enumerate(candidates, start=1)
    ]


async def _diagnose_in_session(
    flow: Flow, incident: Incident, evidence: Evidence, tools: ToolScope
) -> Diagnosis:
    """Diagnose in the service's Claude session when it is recent enough (bot/flow/sessions.py); a
    session the runner no longer knows is forgotten and the diagnosis starts cold."""
    service, cfg = incident.service, flow.runtime(incident.service).cfg
    now = flow.clock.now()
    resume = sessions.to_resume(flow.store, service, runner=flow.runner.name, cfg=flow.config.claude, now=now)

    async def run(session: str | None) -> Diagnosis:
        return await diagnose(
            flow.runner, evidence, str(cfg.repo), incident_id=incident.id, tools=tools, resume_session=session
        )

    try:
        result = await run(resume)
    except RunnerError as exc:
        if resume is None or "conversation" not in str(exc).lower():
            raise
        log.info("the Claude session of %s is gone (%s); starting a new one", service, exc)
        sessions.reset(flow.store, service, actor=sessions.ACTOR, now=now)
        resume = None
        result = await run(None)
    sessions.note(flow.store, service, result.stats, resumed=resume, now=flow.clock.now())
    return result


def _manager_logs(runtime: ServiceRuntime) -> list[str]:
    try:
        return list(runtime.manager.log_paths())
    except HealbotError as exc:
        log.warning("log files of %s for the diagnosis tools: %s", runtime.cfg.name, exc)
        return []


def _not_reverted_before(flow: Flow, incident: Incident, fixes: tuple[Fix, ...]) -> tuple[Fix, ...]:
    reverted = [c.fix for c in flow.store.reverted_candidates(incident.service, incident.fingerprint)]
    return tuple(f for f in fixes if not policy.was_reverted_before(f, reverted))


def _store_proposal(
    flow: Flow, incident_id: int, base_commit: str, candidates: list[Candidate], summary: str
) -> Proposal:
    now = flow.clock.now()
    proposal = flow.store.create_proposal(
        incident_id,
        base_commit=base_commit,
        candidates=candidates,
        summary=flow.scrub(summary),
        at=now,
        expires_at=now + flow.config.approval.expiry_s,
    )
    flow.deadlines_changed()
    return proposal


async def _schedule_retry(flow: Flow, incident: Incident) -> None:
    """A failed diagnosis runs again after a backoff (1×, 2×, 4× retry_backoff_s), then stays failed.
    The time-driven job starts retries that are due; the store keeps them over a restart."""
    attempt = flow.store.retry_attempts(incident.id)
    if attempt >= DIAGNOSIS_RETRIES:
        await flow.channel.notify(
            f"#{incident.id} {incident.service}: {attempt + 1} diagnoses failed; no more retries: "
            "use /diagnose when the cause is gone"
        )
        return
    delay = flow.retry_backoff_s * 2**attempt
    now = flow.clock.now()
    flow.store.schedule_retry(incident.id, attempt + 1, now + delay, at=now)
    await flow.channel.notify(
        f"#{incident.id} {incident.service}: retry {attempt + 1} of {DIAGNOSIS_RETRIES} in {delay:.0f} s"
    )


async def _materialise(
    flow: Flow, runtime: ServiceRuntime, fixes: tuple[Fix, ...], base: str
) -> tuple[list[Candidate], list[str]]:
    candidates: list[Candidate] = []
    problems: list[str] = []
    for fix in fixes:
        healer = flow.healers.get(fix.kind)
        if healer is None:
            problems.append(f"#{fix.rank} {fix.kind.value}: no healer installed")
            continue
        try:
            candidate = await asyncio.to_thread(healer.prepare, runtime.heal_ctx, fix, base)
        except HealbotError as exc:
            problems.append(f"#{fix.rank} {flow.scrub(fix.title)[:60]}: {exc}")
            continue
        destructive = policy.destructive_reason(candidate)
        if destructive is not None:
            problems.append(f"#{fix.rank} {flow.scrub(fix.title)[:60]}: {destructive}")
            continue
        rank = len(candidates) + 1
        candidates.append(dataclasses.replace(candidate, fix=dataclasses.replace(candidate.fix, rank=rank)))
    return candidates, problems


async def diagnose_on_demand(flow: Flow, service: str, actor: str) -> tuple[Proposal | None, str]:
    """`/diagnose SERVICE`: diagnose its open incident now (ignoring the throttle), else the commonest
    error in the tails of its logs. Read-only until someone approves the resulting proposal."""
    runtime = flow.runtime(service)
    busy = {IncidentState.DIAGNOSING, IncidentState.APPLYING, IncidentState.VERIFYING}
    open_incidents = flow.store.incidents(open_only=True, service=service)
    if any(i.state in busy for i in open_incidents):
        return (
            None,
            f"{service} has an incident being diagnosed or fixed right now; try again when it is done",
        )

    def muted(fingerprint_key: str) -> bool:
        return gates.is_muted(flow.store, fingerprint_key, flow.clock.now())

    incident = next((i for i in open_incidents if not muted(i.fingerprint)), None)
    if incident is None:
        paths = [*runtime.cfg.logs, *(Path(p) for p in runtime.manager.log_paths())]
        recent, _ = await asyncio.to_thread(most_frequent_error, service, paths, skip=muted)
        if recent is None:
            return None, f"no errors in {service}'s recent logs (muted ones left out): nothing to diagnose"
        now = flow.clock.now()
        [ingested] = flow.store.ingest(
            f"ondemand:{service}",
            "",
            [Observation(recent.fingerprint, flow.scrub(recent.sample), now)],
            max_samples=flow.config.max_samples,
            at=now,
        )
        incident = ingested.incident
    flow.store.audit(actor, "diagnose_requested", service, at=flow.clock.now(), incident_id=incident.id)
    proposal = await flow.diagnose_incident(incident.id, actor=actor)
    if proposal is None:
        return None, flow.store.incident(incident.id).error or "the diagnosis produced no proposal"
    return proposal, f"diagnosed #{incident.id}: {len(proposal.candidates)} candidate(s)"


def offers_diagnose_again(flow: Flow, incident: Incident) -> bool:
    """A card whose fix was reverted offers Diagnose again, until someone presses it."""
    return (
        incident.state is IncidentState.REVERTED
        and flow.store.get_setting(f"{DIAGNOSE_AGAIN_PREFIX}{incident.id}") is None
    )


async def diagnose_again(flow: Flow, proposal_token: str, actor: str) -> tuple[int | None, str]:
    """Diagnose again on a card whose fix was reverted: the error's open incident (the error came back),
    or else the reverted incident, opened again. The reverted fix is left out of the new proposal.
    The incident to diagnose (None: nothing is done), and what to tell the person."""
    proposal = flow.store.proposal_by_token(proposal_token)
    if proposal is None:
        return None, "unknown proposal: nothing was done"
    incident = flow.store.incident(proposal.incident_id)
    latest = flow.store.latest_proposal(incident.id)
    asked = flow.store.get_setting(f"{DIAGNOSE_AGAIN_PREFIX}{incident.id}")
    if asked is not None:
        return None, f"already asked by {asked}: see the newer card"
    if incident.state is not IncidentState.REVERTED or latest is None or latest.id != proposal.id:
        return None, f"nothing to diagnose again: #{incident.id} is {incident.state.value}"
    hold = flow.hold_reason()
    if hold is not None:
        return None, f"{hold}: nothing was done"
    now = flow.clock.now()
    reopened = [
        i
        for i in flow.store.incidents(open_only=True, service=incident.service)
        if i.fingerprint == incident.fingerprint
    ]
    if reopened and reopened[0].state not in _DIAGNOSABLE_AGAIN:
        return None, f"#{reopened[0].id}, the same error, is {reopened[0].state.value}: nothing was done"
    flow.store.set_setting(f"{DIAGNOSE_AGAIN_PREFIX}{incident.id}", actor, actor=actor, at=now)
    if reopened:
        target = reopened[0]
    else:
        target = flow.store.set_state(
            incident.id, IncidentState.OPEN, at=now, actor=actor, detail="diagnose again after the revert"
        )
    await flow.channel.progress(
        incident, f"diagnosing #{target.id} again, asked by {actor}; the reverted fix is left out"
    )
    return target.id, f"diagnosing #{target.id} again (read-only); the reverted fix is left out"
