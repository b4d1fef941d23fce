"""The one sequencer: incident → diagnosis → approval → apply → restart → verify → keep or revert.

Every other module does one step and does not call the next one. Each state move is persisted before
the side effect it announces, so a restart of the daemon resumes or reports every incident and never
repeats an apply (see `recover`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot import faults, gitinfo, playbooks, policy, recovery, repolock
from bot.config import HealbotConfig, ServiceConfig
from bot.diagnose import diagnose
from bot.errors import (
    DiagnosisError,
    DirtyTreeError,
    HealbotError,
    HealerError,
    RestartFailed,
    RunnerError,
    SourceError,
    StaleProposalError,
    StoreError,
)
from bot.evidence import collect_evidence
from bot.faults import Step
from bot.grouping import Grouper
from bot.health import ErrorLedger, probe, snapshot, verdict
from bot.interfaces import ApprovalChannel, Clock, HealContext, Healer, LogSource, Runner, ServiceManager
from bot.models import (
    Candidate,
    Change,
    ChangeStatus,
    Decision,
    DecisionAction,
    DecisionResult,
    Fix,
    FixKind,
    HealthSnapshot,
    Incident,
    IncidentState,
    Outcome,
    Proposal,
    ProposalStatus,
    Risk,
    RunStats,
    Verdict,
)
from bot.recent import most_frequent_error
from bot.records import RecordAssembler
from bot.redact import redact, redact_env_values
from bot.sources import expand_sources
from bot.store import Observation, Store
from bot.tasks import BackgroundTasks

log = logging.getLogger("healbot.pipeline")

FIRST_APPROVAL_PREFIX = "first_approval:"
DIAGNOSIS_RETRIES = 3
BREAKER_NOTICE_PREFIX = "breaker_notice:"
RESTART_EVENT_PREFIX = "restart:"


@dataclass
class ServiceRuntime:
    """One configured service and the live objects that serve it."""

    cfg: ServiceConfig
    manager: ServiceManager
    sources: list[LogSource]
    heal_ctx: HealContext
    assemblers: dict[str, RecordAssembler] = field(default_factory=dict)
    source_errors: dict[str, str] = field(default_factory=dict)
    repo_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True, slots=True)
class FlowResult:
    """What one apply-and-verify run ended with; the demo and tests read it."""

    incident_id: int
    change: Change | None
    verdict: Verdict | None
    action: str  # "kept", "reverted", "needs_human", "failed"
    detail: str


class Pipeline:
    def __init__(
        self,
        config: HealbotConfig,
        store: Store,
        runner: Runner,
        channel: ApprovalChannel,
        services: Mapping[str, ServiceRuntime],
        healers: Mapping[FixKind, Healer],
        *,
        clock: Clock,
        ledger: ErrorLedger | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.runner = runner
        self.channel = channel
        self.services = services
        self.healers = healers
        self.clock = clock
        self.ledger = ledger or ErrorLedger()
        self._environ = dict(os.environ if environ is None else environ)
        self._tasks = BackgroundTasks(log, "background step")
        self._diagnosing: set[int] = set()
        self._poll_lock = asyncio.Lock()
        self.results: list[FlowResult] = []
        self.grouper = Grouper(persistence=store, now=clock.now)
        self.auto_diagnose = True
        self._last_restart: dict[str, float] = {}
        self._store_problem: str | None = None
        self.retry_backoff_s = 60.0  # first retry of a failed diagnosis; doubles each time

    # --- helpers -----------------------------------------------------------------------------------

    def scrub(self, text: str) -> str:
        """Everything that leaves the process passes here: secrets out, env secret values out."""
        return redact_env_values(redact(text).text, self._environ).text

    def _spawn(self, coro: Coroutine[Any, Any, object], name: str) -> None:
        self._tasks.spawn(coro, name)

    async def wait_idle(self) -> None:
        """Wait until no diagnosis or apply runs in the background (tests, demo, shutdown)."""
        await self._tasks.wait_idle()

    async def cancel_all(self) -> None:
        await self._tasks.cancel_all()

    def is_paused(self) -> bool:
        return policy.is_active_until(self.store.get_setting(policy.PAUSED_UNTIL), self.clock.now())

    def in_maintenance(self) -> bool:
        windows = (policy.parse_window(w) for w in self.config.policy.maintenance_windows)
        return policy.in_maintenance(windows, self.clock.now())

    def hold_reason(self) -> str | None:
        """Why nothing may be proposed or applied right now (detection carries on), or None."""
        if self.is_paused():
            return "healbot is paused: nothing is applied until /resume"
        if self.in_maintenance():
            return "inside a maintenance window: nothing is proposed or applied until it ends"
        return None

    def breaker_reason(self, service: str, fingerprint: str, kind: FixKind | None = None) -> str | None:
        limits = self.config.policy
        now = self.clock.now()
        day_ago = now - policy.DAY_S
        applied = [ChangeStatus.FAILED]
        return policy.breaker_reason(
            policy.Limits(
                limits.fixes_per_fingerprint_per_day,
                limits.restarts_per_service,
                limits.restart_window_s,
                limits.applies_per_day,
            ),
            now,
            fingerprint_applies=[
                c.created_at
                for c in self.store.changes_since(day_ago, service=service, fingerprint=fingerprint)
                if c.status not in applied
            ],
            all_applies=[c.created_at for c in self.store.changes_since(day_ago) if c.status not in applied],
            service_restarts=self.store.audit_times(
                RESTART_EVENT_PREFIX + service, since=now - limits.restart_window_s
            ),
            restarts_needed=kind is not FixKind.RUNBOOK,
        )

    async def _escalate_once(self, incident: Incident, reason: str) -> None:
        """A tripped breaker: the incident goes to a human, with one message saying why."""
        key = f"{BREAKER_NOTICE_PREFIX}{incident.id}"
        if self.store.get_setting(key) is not None:
            return
        self.store.set_setting(key, reason, actor="healbot", at=self.clock.now())
        self.store.set_state(incident.id, IncidentState.NEEDS_HUMAN, at=self.clock.now(), detail=reason)
        await self.channel.notify(f"#{incident.id} {incident.service}: {reason}")

    def is_muted(self, fingerprint_key: str) -> bool:
        return policy.is_active_until(
            self.store.get_setting(policy.MUTE_PREFIX + fingerprint_key), self.clock.now()
        )

    def _runtime(self, service: str) -> ServiceRuntime:
        try:
            return self.services[service]
        except KeyError:
            raise HealbotError(
                f"unknown service {service!r}; configured: {', '.join(self.services)}"
            ) from None

    # --- observe -----------------------------------------------------------------------------------

    async def poll_once(self) -> list[Incident]:
        """Read every source once, count errors into incidents, start diagnoses that are due."""
        touched: list[Incident] = []
        async with self._poll_lock:
            for runtime in self.services.values():
                for source in expand_sources(runtime.sources):
                    try:
                        touched.extend(await self._poll_source(runtime, source))
                        runtime.source_errors.pop(source.source_id, None)
                    except SourceError as exc:
                        if runtime.source_errors.get(source.source_id) != str(exc):
                            log.warning("source %s: %s", source.source_id, exc)
                        runtime.source_errors[source.source_id] = str(exc)
                    except StoreError as exc:
                        await self._store_unwritable(str(exc))
                        return touched  # the cursors did not move: the same lines are read again later
            await self._store_writable()
        if self.auto_diagnose:
            for incident in touched:
                self.maybe_diagnose(incident)
        return touched

    async def _store_unwritable(self, problem: str) -> None:
        """The state database refused a write (a full disk): said once; detection retries every poll."""
        if self._store_problem is not None:
            return
        self._store_problem = problem
        log.error("%s", problem)
        await self._notify_best_effort(f"healbot cannot record new errors: {self.scrub(problem)}")

    async def _store_writable(self) -> None:
        if self._store_problem is None:
            return
        self._store_problem = None
        log.warning("the state database is writable again")
        await self._notify_best_effort(
            "the state database is writable again: the errors logged meanwhile were read and counted"
        )

    async def _notify_best_effort(self, text: str) -> None:
        """A channel may need the store too (the Telegram outbox): a failure is logged, never raised."""
        try:
            await self.channel.notify(text)
        except HealbotError as exc:
            log.error("could not send %r: %s", text[:80], exc)

    async def _poll_source(self, runtime: ServiceRuntime, source: LogSource) -> list[Incident]:
        cursor = self.store.get_cursor(source.source_id)
        assembler = runtime.assemblers.setdefault(
            source.source_id, RecordAssembler(runtime.cfg.name, source.source_id)
        )
        nothing_new = getattr(source, "nothing_new", None)
        if callable(nothing_new) and not assembler.has_pending and nothing_new(cursor):
            return []  # an idle source costs one stat on the loop, not a thread hop
        batch = await asyncio.to_thread(source.read, cursor)
        now = self.clock.now()
        records = assembler.feed(batch.lines, now) if batch.lines else assembler.flush()
        observations = []
        sampled: dict[str, int] = {}
        for record in records:
            fp = self.grouper.fingerprint(record)
            if not fp.is_error:
                continue
            self.ledger.record(runtime.cfg.name, fp.key, now)
            # Redaction is the costly step of a flood: only records that may become stored samples need it.
            sampled[fp.key] = sampled.get(fp.key, 0) + 1
            sample = self.scrub(record.text) if sampled[fp.key] <= self.config.max_samples else ""
            observations.append(Observation(fp, sample, now))
        if not observations and cursor == batch.cursor:
            return []
        ingested = self.store.ingest(
            source.source_id, batch.cursor, observations, max_samples=self.config.max_samples, at=now
        )
        if any(i.is_new for i in ingested):
            faults.hit(Step.INCIDENT_STORED)
        return [i.incident for i in ingested]

    # --- diagnose ----------------------------------------------------------------------------------

    def maybe_diagnose(self, incident: Incident) -> bool:
        if incident.state is not IncidentState.OPEN or incident.id in self._diagnosing:
            return False
        if self.hold_reason() is not None or self.is_muted(incident.fingerprint):
            return False
        runtime = self.services.get(incident.service)
        if runtime is not None and runtime.repo_lock.locked():
            return False  # a change is being applied or verified: its own errors are judged by the verdict
        if policy.in_grace(
            self._last_restart.get(incident.service),
            incident.first_seen,
            self.config.policy.grace_after_restart_s,
        ):
            return False  # born in the noise of healbot's own restart: not a problem of its own
        breaker = self.breaker_reason(incident.service, incident.fingerprint)
        if breaker is not None:
            self._spawn(self._escalate_once(incident, breaker), f"escalate-{incident.id}")
            return False
        last = self.store.last_diagnosis_at(incident.service, incident.fingerprint)
        if not policy.should_diagnose(last, self.clock.now(), self.config.diagnose_every_s):
            return False
        self._diagnosing.add(incident.id)
        self._spawn(self.diagnose_incident(incident.id), f"diagnose-{incident.id}")
        return True

    async def diagnose_incident(self, incident_id: int, *, actor: str = "healbot") -> Proposal | None:
        """Read-only diagnosis, then candidates materialised in scratch worktrees, then a proposal."""
        self._diagnosing.add(incident_id)
        try:
            return await self._diagnose(incident_id, actor)
        finally:
            self._diagnosing.discard(incident_id)

    async def _diagnose(self, incident_id: int, actor: str) -> Proposal | None:
        incident = self.store.begin_diagnosis(incident_id, at=self.clock.now(), actor=actor)
        faults.hit(Step.DIAGNOSIS_STARTED)
        runtime = self._runtime(incident.service)
        cfg = runtime.cfg
        await self.channel.progress(incident, "diagnosing (read-only)…")
        past = self.store.past_outcomes(incident.service, incident.fingerprint)
        try:
            evidence = await asyncio.to_thread(
                collect_evidence,
                incident,
                repo=cfg.repo,
                allowed_paths=cfg.allowed_paths,
                runbooks=list(cfg.runbooks),
                past_outcomes=past,
                redact=self.scrub,
            )
            result = await diagnose(self.runner, evidence, str(cfg.repo))
        except (RunnerError, DiagnosisError, HealbotError) as exc:
            message = f"diagnosis failed: {self.scrub(str(exc))}"
            stats = exc.stats if isinstance(exc, RunnerError | DiagnosisError) else None
            self.store.record_diagnosis(
                incident_id,
                stats if isinstance(stats, RunStats) else RunStats(self.runner.name, 0.0),
                summary="",
                at=self.clock.now(),
                error=message,
            )
            # No card exists yet: the note names the error itself, so the chat knows what failed to diagnose.
            await self.channel.notify(
                f"#{incident_id} {incident.service}: {self.scrub(incident.title)[:200]}\n{message}"
            )
            offered = await self._offer_playbooks(runtime, incident, message)
            if offered is None:
                await self._schedule_retry(incident)
            return offered
        self.store.clear_retries(incident_id)
        self.store.record_diagnosis(incident_id, result.stats, summary=result.summary, at=self.clock.now())

        reverted = [c.fix for c in self.store.reverted_candidates(incident.service, incident.fingerprint)]
        fresh = tuple(f for f in result.fixes if not policy.was_reverted_before(f, reverted))
        candidates, problems = await self._materialise(runtime, fresh, evidence.head)
        problems += [
            f"#{f.rank} {f.title[:60]}: was applied before and reverted; not proposed again"
            for f in result.fixes
            if f not in fresh
        ]
        faults.hit(Step.WORKTREE_PREPARED)
        if not candidates:
            message = "no usable fix: " + "; ".join(problems) if problems else "no fix was proposed"
            self.store.set_state(
                incident_id, IncidentState.DIAGNOSIS_FAILED, at=self.clock.now(), error=self.scrub(message)
            )
            await self.channel.notify(f"#{incident_id} {incident.service}: {self.scrub(message)}")
            return None
        hold = self.hold_reason()
        if hold is not None:
            self.store.set_state(
                incident_id, IncidentState.OPEN, at=self.clock.now(), detail=f"not proposed: {hold}"
            )
            return None
        now = self.clock.now()
        summary = result.summary
        if problems:
            summary += "\n(dropped: " + "; ".join(problems) + ")"
        proposal = self.store.create_proposal(
            incident_id,
            base_commit=evidence.head,
            candidates=candidates,
            summary=self.scrub(summary),
            at=now,
            expires_at=now + self.config.approval.expiry_s,
        )
        faults.hit(Step.PROPOSAL_STORED)
        await self.channel.present(self.store.incident(incident_id), proposal)
        faults.hit(Step.CARD_SENT)
        return proposal

    async def _offer_playbooks(
        self, runtime: ServiceRuntime, incident: Incident, reason: str
    ) -> Proposal | None:
        """Claude could not help: offer the deterministic playbooks that apply, labelled as such."""
        cfg = runtime.cfg
        state = None
        try:
            state = (await asyncio.to_thread(runtime.manager.status)).state
        except HealbotError as exc:
            log.warning("status of %s for the playbooks: %s", cfg.name, exc)
        fixes = await asyncio.to_thread(playbooks.playbook_fixes, incident, repo=cfg.repo, state=state)
        reverted = [c.fix for c in self.store.reverted_candidates(incident.service, incident.fingerprint)]
        fixes = tuple(f for f in fixes if not policy.was_reverted_before(f, reverted))
        if not fixes or self.hold_reason() is not None:
            return None
        head = await asyncio.to_thread(gitinfo.head, cfg.repo)
        candidates, problems = await self._materialise(runtime, fixes, head)
        if not candidates:
            log.info("no playbook applies to #%d: %s", incident.id, "; ".join(problems))
            return None
        now = self.clock.now()
        summary = f"{reason}. Deterministic playbooks are offered instead: no LLM was involved in these."
        proposal = self.store.create_proposal(
            incident.id,
            base_commit=head,
            candidates=candidates,
            summary=self.scrub(summary),
            at=now,
            expires_at=now + self.config.approval.expiry_s,
        )
        await self.channel.present(self.store.incident(incident.id), proposal)
        return proposal

    async def _schedule_retry(self, incident: Incident) -> None:
        """A failed diagnosis runs again after a backoff (1×, 2×, 4× retry_backoff_s), then stays failed.
        `expire_due`, the time-driven job, starts retries that are due; the store keeps them over a restart."""
        attempt = self.store.retry_attempts(incident.id)
        if attempt >= DIAGNOSIS_RETRIES:
            await self.channel.notify(
                f"#{incident.id} {incident.service}: {attempt + 1} diagnoses failed; no more retries: "
                "use /diagnose when the cause is gone"
            )
            return
        delay = self.retry_backoff_s * 2**attempt
        now = self.clock.now()
        self.store.schedule_retry(incident.id, attempt + 1, now + delay, at=now)
        await self.channel.notify(
            f"#{incident.id} {incident.service}: retry {attempt + 1} of {DIAGNOSIS_RETRIES} in {delay:.0f} s"
        )

    def _start_due_retries(self) -> None:
        for incident_id in self.store.take_due_retries(self.clock.now()):
            incident = self.store.incident(incident_id)
            if incident.state is not IncidentState.DIAGNOSIS_FAILED or self.hold_reason() is not None:
                continue
            if incident_id in self._diagnosing:
                continue
            self._diagnosing.add(incident_id)
            self._spawn(self.diagnose_incident(incident_id), f"retry-diagnosis-{incident_id}")

    async def _materialise(
        self, runtime: ServiceRuntime, fixes: tuple[Fix, ...], base: str
    ) -> tuple[list[Candidate], list[str]]:
        candidates: list[Candidate] = []
        problems: list[str] = []
        for fix in fixes:
            healer = self.healers.get(fix.kind)
            if healer is None:
                problems.append(f"#{fix.rank} {fix.kind.value}: no healer installed")
                continue
            try:
                candidate = await asyncio.to_thread(healer.prepare, runtime.heal_ctx, fix, base)
            except HealbotError as exc:
                problems.append(f"#{fix.rank} {fix.title[:60]}: {exc}")
                continue
            destructive = policy.destructive_reason(candidate)
            if destructive is not None:
                problems.append(f"#{fix.rank} {fix.title[:60]}: {destructive}")
                continue
            rank = len(candidates) + 1
            candidates.append(
                dataclasses.replace(candidate, fix=dataclasses.replace(candidate.fix, rank=rank))
            )
        return candidates, problems

    # --- decide ------------------------------------------------------------------------------------

    async def decide(self, decision: Decision) -> DecisionResult:
        """Honour a person's decision only if it is still valid; otherwise say why and change nothing."""
        now = self.clock.now()
        proposal = self.store.proposal_by_token(decision.proposal_token)
        if proposal is None:
            return self._refuse(None, decision, "unknown proposal: nothing was applied")
        if proposal.status is not ProposalStatus.PENDING:
            who = self.store.decider(proposal.id)
            by = f" by {who[0]}" if who else ""
            return self._refuse(
                proposal, decision, f"already {proposal.status.value}{by}: nothing more to do"
            )
        incident = self.store.incident(proposal.incident_id)
        if now >= proposal.expires_at:
            await self._expire(proposal, incident)
            return self._refuse(
                proposal, decision, "expired: nothing was applied; re-diagnose to get a fresh proposal"
            )
        if decision.action is DecisionAction.REJECT:
            msg = f"rejected by {decision.actor}"
            if self.store.close_proposal(
                proposal,
                ProposalStatus.REJECTED,
                decision,
                incident_state=IncidentState.REJECTED,
                message=msg,
                at=now,
            ):
                await self.channel.progress(incident, msg)
                return DecisionResult(True, msg)
            return self._already(proposal, decision)
        if decision.action is DecisionAction.SNOOZE:
            self.store.audit(decision.actor, "snoozed", proposal.token, at=now, incident_id=incident.id)
            return DecisionResult(True, "snoozed: the proposal stays open until it expires")
        return await self._approve(proposal, incident, decision, now)

    def _refuse(self, proposal: Proposal | None, decision: Decision, message: str) -> DecisionResult:
        self.store.record_refused_decision(proposal, decision, message, at=self.clock.now())
        return DecisionResult(False, message)

    def _already(self, proposal: Proposal, decision: Decision) -> DecisionResult:
        who = self.store.decider(proposal.id)
        by = f"{who[1]}d by {who[0]}" if who else "decided"
        return self._refuse(proposal, decision, f"already {by}: nothing more to do")

    async def _approve(
        self, proposal: Proposal, incident: Incident, decision: Decision, now: float
    ) -> DecisionResult:
        hold = self.hold_reason()
        if hold is not None:
            return self._refuse(proposal, decision, hold)
        candidate = next((c for c in proposal.candidates if c.fix.rank == decision.rank), None)
        if candidate is None:
            return self._refuse(proposal, decision, f"there is no candidate #{decision.rank}")
        breaker = self.breaker_reason(incident.service, incident.fingerprint, candidate.fix.kind)
        if breaker is not None:
            return self._refuse(proposal, decision, f"{breaker}: nothing was applied")
        if decision.digest is not None and decision.digest != candidate.digest:
            return self._refuse(
                proposal, decision, "the fix you saw is not the one stored: nothing was applied"
            )
        runtime = self._runtime(incident.service)
        locked = await self._repo_locked(runtime, candidate.fix.kind)
        if locked is not None:
            return self._refuse(
                proposal,
                decision,
                f"{locked}: nothing was applied; the proposal stays open: approve again when the lock is gone",
            )
        head = await asyncio.to_thread(gitinfo.head, runtime.cfg.repo)
        if head != proposal.base_commit:
            msg = f"the repo moved (HEAD {head[:10]}, proposal made at {proposal.base_commit[:10]}): re-diagnosing"
            if self.store.close_proposal(
                proposal, ProposalStatus.STALE, None, incident_state=IncidentState.OPEN, message=msg, at=now
            ):
                self._refuse(proposal, decision, msg)
                self._spawn(self.diagnose_incident(incident.id), f"rediagnose-{incident.id}")
                return DecisionResult(False, msg)
            return self._already(proposal, decision)
        quorum = await self._second_approval_needed(proposal, incident, candidate, decision)
        if quorum is not None:
            return quorum
        msg = f"approved #{candidate.fix.rank} by {decision.actor}"
        if not self.store.close_proposal(
            proposal,
            ProposalStatus.APPROVED,
            decision,
            incident_state=IncidentState.APPLYING,
            message=msg,
            at=now,
        ):
            return self._already(proposal, decision)
        change = self.store.create_change(
            proposal, candidate, service=incident.service, approved_by=decision.actor, at=now
        )
        faults.hit(Step.APPROVAL_RECORDED)
        self._spawn(self.apply_and_verify(proposal, candidate, change), f"apply-{change.id}")
        return DecisionResult(True, f"{msg}: applying")

    async def _repo_locked(self, runtime: ServiceRuntime, kind: FixKind) -> str | None:
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
        self, proposal: Proposal, incident: Incident, candidate: Candidate, decision: Decision
    ) -> DecisionResult | None:
        """High-risk candidates may need two different approvers; the first press is recorded, not applied."""
        if not (self.config.approval.second_approver_for_high_risk and candidate.fix.risk is Risk.HIGH):
            return None
        key = f"{FIRST_APPROVAL_PREFIX}{proposal.token}:{candidate.fix.rank}"
        first = self.store.get_setting(key)
        if first is None:
            self.store.set_setting(key, decision.actor, actor=decision.actor, at=self.clock.now())
            msg = f"high-risk fix #{candidate.fix.rank}: approval 1 of 2 by {decision.actor}; a second approver must press Approve too"
            await self.channel.progress(incident, msg)
            return DecisionResult(True, msg)
        if first == decision.actor:
            return self._refuse(
                proposal,
                decision,
                f"you already approved #{candidate.fix.rank}: a second, different approver is needed",
            )
        return None

    # --- apply, restart, verify --------------------------------------------------------------------

    async def _snapshot(self, runtime: ServiceRuntime, start: float, end: float) -> HealthSnapshot:
        result = await probe(runtime.cfg.health, runtime.manager)
        errors = self.ledger.counts(runtime.cfg.name, start, end)
        return snapshot(result, errors, end, end - start)

    async def _observe_window(self, runtime: ServiceRuntime) -> HealthSnapshot:
        start = self.clock.now()
        await asyncio.sleep(runtime.cfg.health.window_s)
        await self.poll_once()
        return await self._snapshot(runtime, start, self.clock.now())

    async def apply_and_verify(self, proposal: Proposal, candidate: Candidate, change: Change) -> FlowResult:
        incident = self.store.incident(proposal.incident_id)
        runtime = self._runtime(incident.service)
        async with runtime.repo_lock:
            result = await self._apply_and_verify(runtime, incident, proposal, candidate, change)
        self.results.append(result)
        return result

    async def _apply_and_verify(
        self,
        runtime: ServiceRuntime,
        incident: Incident,
        proposal: Proposal,
        candidate: Candidate,
        change: Change,
    ) -> FlowResult:
        cfg = runtime.cfg
        now = self.clock.now()
        await self.poll_once()
        last_seen = self.store.incident(incident.id).last_seen
        before = await self._snapshot(
            runtime, policy.baseline_start(now, cfg.health.window_s, last_seen), now
        )
        self.store.save_baseline(change.id, before)
        healer = self.healers[candidate.fix.kind]
        trailers = {
            "Healbot-Incident": str(incident.id),
            "Healbot-Fingerprint": incident.fingerprint,
            "Healbot-Digest": candidate.digest,
            "Approved-By": change.approved_by,
        }
        await self.channel.progress(incident, f"applying #{candidate.fix.rank}: {candidate.fix.title}")
        try:
            applied = await asyncio.to_thread(
                healer.apply, runtime.heal_ctx, candidate, proposal.base_commit, trailers
            )
        except (DirtyTreeError, StaleProposalError, HealerError) as exc:
            detail = f"not applied: {self.scrub(str(exc))}"
            self.store.update_change(
                change.id,
                ChangeStatus.FAILED,
                at=self.clock.now(),
                incident_state=IncidentState.NEEDS_HUMAN,
                detail=detail,
            )
            await self.channel.progress(incident, detail)
            return FlowResult(incident.id, self.store.change(change.id), None, "failed", detail)
        commit = applied.commit
        faults.hit(Step.COMMIT_MADE)
        change = self.store.update_change(
            change.id,
            ChangeStatus.COMMITTED,
            at=self.clock.now(),
            commit=commit,
            incident_state=IncidentState.VERIFYING,
            detail=applied.detail or (commit or ""),
        )
        return await self._restart_and_verify(runtime, incident, change, before, restart=True)

    async def _restart_and_verify(
        self,
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
            await self.channel.progress(incident, f"{committed} → restarting {cfg.name}")
            restart_error = await self._restart(runtime)
            faults.hit(Step.RESTART_ISSUED)
        if restart_error is None:
            change = self.store.update_change(change.id, ChangeStatus.RESTARTED, at=self.clock.now())
            await self.channel.progress(incident, f"{committed} → verifying for {cfg.health.window_s:.0f} s")
            faults.hit(Step.VERIFICATION_RUNNING)
            after = await self._observe_window(runtime)
            outcome_verdict, reasons = verdict(before, after, incident.fingerprint)
        else:
            after = await self._snapshot(runtime, self.clock.now(), self.clock.now())
            outcome_verdict, reasons = Verdict.WORSE, (f"restart failed: {restart_error}",)
        self.store.record_outcome(
            Outcome(change.id, before, after, outcome_verdict, reasons), at=self.clock.now()
        )
        if outcome_verdict is Verdict.WORSE:
            return await self._revert(runtime, incident, change, before, after, reasons)
        if outcome_verdict is Verdict.BETTER:
            change = self.store.update_change(
                change.id,
                ChangeStatus.KEPT,
                at=self.clock.now(),
                incident_state=IncidentState.RESOLVED,
                detail="; ".join(reasons),
            )
            text = f"kept {committed}: {outcome_verdict.value} ({'; '.join(reasons)})"
            await self.channel.progress(incident, text)
            return FlowResult(incident.id, change, outcome_verdict, "kept", text)
        change = self.store.update_change(
            change.id,
            ChangeStatus.NEEDS_HUMAN,
            at=self.clock.now(),
            incident_state=IncidentState.NEEDS_HUMAN,
            detail="; ".join(reasons),
        )
        text = f"{committed} kept for now, but the verdict is {outcome_verdict.value} ({'; '.join(reasons)}): please decide; revert with `healbot revert {change.id}`"
        await self.channel.progress(incident, text)
        return FlowResult(incident.id, change, outcome_verdict, "needs_human", text)

    async def _restart(self, runtime: ServiceRuntime) -> str | None:
        """Restart through the manager, unless the manager is already fighting a crash loop."""
        service = runtime.cfg.name
        try:
            status = await asyncio.to_thread(runtime.manager.status)
        except HealbotError as exc:
            log.warning("status of %s before restart: %s", service, exc)
        else:
            storm = policy.manager_storm_reason(status.state, status.detail)
            if storm is not None:
                return self.scrub(storm)
        now = self.clock.now()
        self._last_restart[service] = now
        self.store.audit("healbot", RESTART_EVENT_PREFIX + service, "restart issued", at=now)
        try:
            await asyncio.to_thread(runtime.manager.restart, runtime.cfg.health.settle_s)
        except RestartFailed as exc:
            return self.scrub(str(exc))
        except HealbotError as exc:
            return self.scrub(str(exc))
        return None

    async def _revert(
        self,
        runtime: ServiceRuntime,
        incident: Incident,
        change: Change,
        before: HealthSnapshot,
        after: HealthSnapshot,
        reasons: tuple[str, ...],
    ) -> FlowResult:
        why = "; ".join(reasons)
        if change.commit is None:
            change = self.store.update_change(
                change.id,
                ChangeStatus.NEEDS_HUMAN,
                at=self.clock.now(),
                incident_state=IncidentState.NEEDS_HUMAN,
                detail=why,
            )
            text = f"health got worse ({why}) and there is no commit to revert: please look"
            await self.channel.progress(incident, text)
            return FlowResult(incident.id, change, Verdict.WORSE, "needs_human", text)
        await self.channel.progress(incident, f"worse ({why}) → reverting {change.commit[:10]}")
        trailers = {"Healbot-Incident": str(incident.id), "Healbot-Revert-Reason": why[:200]}
        healer = self.healers[change.kind]
        try:
            revert_commit = await asyncio.to_thread(healer.undo, runtime.heal_ctx, change.commit, trailers)
            faults.hit(Step.REVERT_MADE)
        except HealbotError as exc:
            text = f"health got worse ({why}) and the revert failed: {self.scrub(str(exc))}; please look now"
            change = self.store.update_change(
                change.id,
                ChangeStatus.NEEDS_HUMAN,
                at=self.clock.now(),
                incident_state=IncidentState.NEEDS_HUMAN,
                detail=text,
            )
            await self.channel.progress(incident, text)
            return FlowResult(incident.id, change, Verdict.WORSE, "needs_human", text)
        change = self.store.update_change(
            change.id,
            ChangeStatus.REVERTED,
            at=self.clock.now(),
            revert_commit=revert_commit,
            incident_state=IncidentState.REVERTED,
            detail=why,
        )
        restart_error = await self._restart(runtime)
        if restart_error is None:
            recovered = await self._observe_window(runtime)
            state = "service back up" if recovered.process_up is not False else "service still down"
        else:
            recovered = await self._snapshot(runtime, self.clock.now(), self.clock.now())
            state = f"restart after revert failed: {restart_error}"
        self._close_incidents_caused_by(change, recovered)
        text = (
            f"reverted {change.commit[:10] if change.commit else ''} with {revert_commit[:10]}: {why}; {state} "
            f"(errors before {before.errors_total}, with the fix {after.errors_total}, after the revert {recovered.errors_total})"
        )
        await self.channel.progress(incident, text)
        return FlowResult(incident.id, change, Verdict.WORSE, "reverted", text)

    def _close_incidents_caused_by(self, change: Change, after_revert: HealthSnapshot) -> None:
        """Incidents that first appeared while a change was live and stopped after its revert were caused
        by it; close them so they are not diagnosed as problems of their own."""
        still_seen = {key for key, count in after_revert.errors_by_fingerprint if count > 0}
        for incident in self.store.incidents(open_only=True, service=change.service):
            if (
                incident.id != change.incident_id
                and incident.state is IncidentState.OPEN
                and incident.first_seen >= change.created_at
                and incident.fingerprint not in still_seen
            ):
                self.store.set_state(
                    incident.id,
                    IncidentState.RESOLVED,
                    at=self.clock.now(),
                    detail=f"appeared with change {change.id} and stopped after its revert",
                )

    # --- time-driven and recovery ------------------------------------------------------------------

    async def _expire(self, proposal: Proposal, incident: Incident) -> None:
        msg = "expired without a decision: nothing was applied"
        if self.store.close_proposal(
            proposal,
            ProposalStatus.EXPIRED,
            None,
            incident_state=IncidentState.EXPIRED,
            message=msg,
            at=self.clock.now(),
        ):
            await self.channel.progress(incident, msg)

    async def expire_due(self) -> None:
        self._start_due_retries()
        now = self.clock.now()
        for proposal in self.store.pending_proposals():
            status = policy.expiry_status(
                proposal, now, self.config.approval.reminder_before_s, self.store.was_reminded(proposal.id)
            )
            incident = self.store.incident(proposal.incident_id)
            if status is policy.ExpiryStatus.EXPIRED:
                await self._expire(proposal, incident)
            elif status is policy.ExpiryStatus.REMIND:
                self.store.mark_reminded(proposal.id)
                minutes = max(1, round((proposal.expires_at - now) / 60))
                await self.channel.notify(
                    f"reminder: #{incident.id} {incident.service} has a fix waiting; it expires in {minutes} min"
                )

    async def recover(self) -> list[str]:
        """After a restart: resume what is safe, report the rest. Never repeats an apply."""
        return await recovery.recover(self)

    async def backup_due(self) -> None:
        """The daily online backup of the store; a failure is reported, never fatal."""
        try:
            made = await asyncio.to_thread(self.store.backup_if_due, self.clock.now())
        except HealbotError as exc:
            log.error("state backup failed: %s", exc)
            await self.channel.notify(
                f"the daily backup of the state database failed: {self.scrub(str(exc))}"
            )
            return
        if made is not None:
            log.info("state backed up to %s", made)

    # --- operator actions --------------------------------------------------------------------------

    async def diagnose_on_demand(self, service: str, actor: str) -> tuple[Proposal | None, str]:
        """`/diagnose SERVICE`: diagnose its open incident now (ignoring the throttle), else the commonest
        error in the tails of its logs. Read-only until someone approves the resulting proposal."""
        runtime = self._runtime(service)
        busy = {IncidentState.DIAGNOSING, IncidentState.APPLYING, IncidentState.VERIFYING}
        open_incidents = self.store.incidents(open_only=True, service=service)
        if any(i.state in busy for i in open_incidents):
            return (
                None,
                f"{service} has an incident being diagnosed or fixed right now; try again when it is done",
            )
        incident = open_incidents[0] if open_incidents else None
        if incident is None:
            paths = [*runtime.cfg.logs, *(Path(p) for p in runtime.manager.log_paths())]
            recent, _ = await asyncio.to_thread(most_frequent_error, service, paths)
            if recent is None:
                return None, f"no errors in {service}'s recent logs: nothing to diagnose"
            now = self.clock.now()
            [ingested] = self.store.ingest(
                f"ondemand:{service}",
                "",
                [Observation(recent.fingerprint, self.scrub(recent.sample), now)],
                max_samples=self.config.max_samples,
                at=now,
            )
            incident = ingested.incident
        self.store.audit(actor, "diagnose_requested", service, at=self.clock.now(), incident_id=incident.id)
        proposal = await self.diagnose_incident(incident.id, actor=actor)
        if proposal is None:
            return None, self.store.incident(incident.id).error or "the diagnosis produced no proposal"
        return proposal, f"diagnosed #{incident.id}: {len(proposal.candidates)} candidate(s)"

    async def revert_change(self, change_id: int, actor: str) -> str:
        """Operator-requested undo of a healbot commit: exactly that commit, then restart."""
        change = self.store.change(change_id)
        if change is None or change.commit is None:
            raise HealbotError(f"change #{change_id} does not exist or made no commit")
        if change.revert_commit:
            raise HealbotError(f"change #{change_id} was already reverted by {change.revert_commit[:10]}")
        runtime = self._runtime(change.service)
        async with runtime.repo_lock:
            revert_commit = await asyncio.to_thread(
                self.healers[change.kind].undo,
                runtime.heal_ctx,
                change.commit,
                {"Healbot-Incident": str(change.incident_id), "Approved-By": actor},
            )
            self.store.update_change(
                change.id,
                ChangeStatus.REVERTED,
                at=self.clock.now(),
                revert_commit=revert_commit,
                incident_state=IncidentState.REVERTED,
                detail=f"reverted by {actor}",
            )
            restart_error = await self._restart(runtime)
        suffix = "" if restart_error is None else f"; restart failed: {restart_error}"
        return f"reverted {change.commit[:10]} with {revert_commit[:10]}{suffix}"
