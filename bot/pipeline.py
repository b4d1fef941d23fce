"""The one sequencer: incident → diagnosis → approval → apply → restart → verify → keep or revert.

`Pipeline` owns the state and decides what runs when; each step lives in `bot.flow` and does not call the
next one. Each state move is persisted before the side effect it announces, so a restart of the daemon
resumes or reports every incident and never repeats an apply (see `recover`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Coroutine, Mapping
from typing import Any

from bot import policy, recovery
from bot.config import HealbotConfig
from bot.errors import HealbotError
from bot.flow import apply, approval, diagnosis, gates
from bot.flow.approval import FIRST_APPROVAL_PREFIX
from bot.flow.context import LOGGER_NAME, FlowResult, ServiceRuntime
from bot.flow.deadlines import DeadlineTimer
from bot.flow.diagnosis import DIAGNOSIS_RETRIES
from bot.flow.gates import RESTART_EVENT_PREFIX
from bot.flow.observe import Observer
from bot.grouping import Grouper
from bot.health import ErrorLedger
from bot.interfaces import ApprovalChannel, Clock, Healer, Runner
from bot.models import (
    Candidate,
    Change,
    Decision,
    DecisionResult,
    FixKind,
    Incident,
    IncidentState,
    Proposal,
)
from bot.redact import scrubber
from bot.store import Store
from bot.tasks import BackgroundTasks

__all__ = [
    "BREAKER_NOTICE_PREFIX",
    "DIAGNOSIS_RETRIES",
    "FIRST_APPROVAL_PREFIX",
    "RESTART_EVENT_PREFIX",
    "FlowResult",
    "Pipeline",
    "ServiceRuntime",
]

log = logging.getLogger(LOGGER_NAME)

BREAKER_NOTICE_PREFIX = "breaker_notice:"
# what a queued diagnosis may still start on (DIAGNOSING: resumed after a restart; FAILED: a retry)
_DIAGNOSABLE = frozenset({IncidentState.OPEN, IncidentState.DIAGNOSING, IncidentState.DIAGNOSIS_FAILED})


def ledger_horizon_s(config: HealbotConfig) -> float:
    """How far back error times are kept: as far as a verdict's "before" window may reach."""
    windows = (s.health.window_s for s in config.services.values())
    return max([policy.BASELINE_MAX_LOOKBACK_S, *windows]) + ErrorLedger.DEFAULT_BUCKET_S


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
        self.ledger = ledger or ErrorLedger(horizon_s=ledger_horizon_s(config))
        self._restore_ledger()
        # the secret values of the environment, computed once: per scrubbed line they cost 5 of 31 s of a flood
        self._scrub = scrubber(os.environ if environ is None else environ)
        self._tasks = BackgroundTasks(log, "background step")
        self._diagnosing: set[int] = set()  # queued or running
        self._diagnosis_queue: deque[tuple[int, str]] = deque()
        self._diagnoses_running = 0
        self._diagnosis_budget: policy.WindowBudget | None = None
        self.results: list[FlowResult] = []
        self.grouper = Grouper(persistence=store, now=clock.now)
        self._observer = Observer(self)
        self.auto_diagnose = True
        self.last_restart: dict[str, float] = {}
        self.retry_backoff_s = 60.0  # first retry of a failed diagnosis; doubles each time
        self._deadlines_lock = asyncio.Lock()
        self.deadlines = DeadlineTimer(clock, self.next_deadline, self.deadlines_due)

    # --- helpers -----------------------------------------------------------------------------------

    def scrub(self, text: str) -> str:
        """Everything that leaves the process passes here: secrets out, env secret values out."""
        return self._scrub(text)

    def spawn(self, coro: Coroutine[Any, Any, object], name: str) -> None:
        self._tasks.spawn(coro, name)

    async def wait_idle(self) -> None:
        """Wait until no diagnosis or apply runs in the background (tests, demo, shutdown)."""
        await self._tasks.wait_idle()

    async def cancel_all(self) -> None:
        await self._tasks.cancel_all()

    def runtime(self, service: str) -> ServiceRuntime:
        try:
            return self.services[service]
        except KeyError:
            raise HealbotError(
                f"unknown service {service!r}; configured: {', '.join(self.services)}"
            ) from None

    # --- gates -------------------------------------------------------------------------------------

    def is_paused(self) -> bool:
        return gates.is_paused(self.store, self.clock.now())

    def in_maintenance(self) -> bool:
        return gates.in_maintenance(self.config, self.clock.now())

    def hold_reason(self) -> str | None:
        """Why nothing may be proposed or applied right now (detection carries on), or None."""
        return gates.hold_reason(self.config, self.store, self.clock.now())

    def breaker_reason(self, service: str, fingerprint: str, kind: FixKind | None = None) -> str | None:
        return gates.breaker_reason(self.config, self.store, self.clock.now(), service, fingerprint, kind)

    def is_muted(self, fingerprint_key: str) -> bool:
        return gates.is_muted(self.store, fingerprint_key, self.clock.now())

    async def _escalate_once(self, incident: Incident, reason: str) -> None:
        """A tripped breaker: the incident goes to a human, with one message saying why."""
        key = f"{BREAKER_NOTICE_PREFIX}{incident.id}"
        if self.store.get_setting(key) is not None:
            return
        self.store.set_setting(key, reason, actor="healbot", at=self.clock.now())
        self.store.set_state(incident.id, IncidentState.NEEDS_HUMAN, at=self.clock.now(), detail=reason)
        await self.channel.notify(f"#{incident.id} {incident.service}: {reason}")

    # --- observe -----------------------------------------------------------------------------------

    async def poll_once(self) -> list[Incident]:
        """Read every source once, count errors into incidents, start diagnoses that are due."""
        touched = await self._observer.poll()
        self.save_ledger()
        if self.auto_diagnose:
            for incident in touched:
                self.maybe_diagnose(incident)
        return touched

    # --- the error ledger, kept in the store -------------------------------------------------------

    def _restore_ledger(self) -> None:
        """The error times of the last hour or so, as saved before a restart: a "before" window that
        reaches back past the restart still counts them."""
        try:
            self.store.prune_error_series(self.clock.now() - self.ledger.horizon_s)
            self.ledger.restore(self.store.error_series())
        except HealbotError as exc:
            log.warning("error counts from before the restart not loaded: %s", exc)

    def save_ledger(self) -> None:
        """What the ledger counted since the last save goes to the store (one transaction, none when
        nothing changed); a store that refuses is retried at the next save."""
        changed, dropped = self.ledger.take_changes()
        try:
            self.store.save_error_series(changed, dropped)
        except HealbotError as exc:
            self.ledger.keep_changes(changed, dropped)
            log.warning("error counts not saved (kept for the next poll): %s", exc)

    def records_read(self) -> Mapping[str, int]:
        """Records assembled per source id since start (for /metrics)."""
        return self._observer.records_read

    # --- diagnose ----------------------------------------------------------------------------------

    def maybe_diagnose(self, incident: Incident, *, throttled: bool = True) -> bool:
        if incident.state is not IncidentState.OPEN or incident.id in self._diagnosing:
            return False
        if policy.is_storm(incident.fingerprint):
            return False  # the count of many kinds of errors: there is no one error to diagnose
        if self.hold_reason() is not None or self.is_muted(incident.fingerprint):
            return False
        runtime = self.services.get(incident.service)
        if runtime is not None and runtime.repo_lock.locked():
            return False  # a change is being applied or verified: its own errors are judged by the verdict
        if policy.in_grace(
            self.last_restart.get(incident.service),
            self.clock.now(),
            self.config.policy.grace_after_restart_s,
        ):
            return False  # the noise of healbot's own restart; still there after the grace, it is diagnosed
        breaker = self.breaker_reason(incident.service, incident.fingerprint)
        if breaker is not None:
            self.spawn(self._escalate_once(incident, breaker), f"escalate-{incident.id}")
            return False
        last = self.store.last_diagnosis_at(incident.service, incident.fingerprint)
        if throttled and not policy.should_diagnose(last, self.clock.now(), self.config.diagnose_every_s):
            return False
        budget = self._diagnoses_budget()
        now = self.clock.now()
        if budget.allowance(incident.service, now) < 1 or len(self._diagnosis_queue) >= budget.total:
            return False  # over the [limits] diagnosis caps: stays open, diagnosed when next seen in budget
        budget.charge(incident.service, now)
        self.start_diagnosis(incident.id, f"diagnose-{incident.id}")
        return True

    def diagnose_held(self) -> int:
        """After a hold (/pause) is lifted: the open incidents it kept from their diagnosis get it now,
        under the usual rules (throttle, mutes, caps, breakers); one whose own diagnosis ended in the
        hold, without a card, is not throttled by it. How many were started."""
        if not self.auto_diagnose:
            return 0
        held = [
            i for i in self.store.incidents(open_only=True, limit=10_000) if i.state is IncidentState.OPEN
        ]
        started = 0
        for incident in reversed(held):  # oldest first
            unshown = (
                incident.last_diagnosed_at is not None and self.store.latest_proposal(incident.id) is None
            )
            started += self.maybe_diagnose(incident, throttled=not unshown)
        return started

    def is_diagnosing(self, incident_id: int) -> bool:
        return incident_id in self._diagnosing

    def _diagnoses_budget(self) -> policy.WindowBudget:
        limits = self.config.limits
        budget = self._diagnosis_budget
        wanted = (limits.diagnoses_per_service, limits.diagnoses, limits.period_s)
        if budget is None or (budget.per_key, budget.total, budget.period_s) != wanted:
            budget = self._diagnosis_budget = policy.WindowBudget(*wanted)
        return budget

    def start_diagnosis(self, incident_id: int, task_name: str) -> None:
        """Queue a diagnosis (FIFO); at most `claude.max_concurrent` run at once, each in the background.
        The incident counts as being diagnosed from this call on, so a poll before it starts does not queue
        a second one; it stays open (not "diagnosing") until it starts."""
        if incident_id in self._diagnosing:
            return
        self._diagnosing.add(incident_id)
        self._diagnosis_queue.append((incident_id, task_name))
        self._start_queued()

    def queued_diagnoses(self) -> int:
        return len(self._diagnosis_queue)

    def _start_queued(self) -> None:
        while self._diagnosis_queue and self._diagnoses_running < max(1, self.config.claude.max_concurrent):
            incident_id, task_name = self._diagnosis_queue.popleft()
            self._diagnoses_running += 1
            self.spawn(self._run_queued(incident_id), task_name)

    async def _run_queued(self, incident_id: int) -> None:
        try:
            if self.store.incident(incident_id).state in _DIAGNOSABLE:
                await self.diagnose_incident(incident_id)
            else:
                self._diagnosing.discard(incident_id)  # moved on while it waited (muted, resolved)
        finally:
            self._diagnoses_running -= 1
            self._start_queued()

    async def diagnose_incident(self, incident_id: int, *, actor: str = "healbot") -> Proposal | None:
        """Read-only diagnosis, then candidates materialised in scratch worktrees, then a proposal."""
        self._diagnosing.add(incident_id)
        try:
            return await diagnosis.run_diagnosis(self, incident_id, actor)
        finally:
            self._diagnosing.discard(incident_id)

    def _start_due_retries(self) -> None:
        for incident_id in self.store.take_due_retries(self.clock.now()):
            incident = self.store.incident(incident_id)
            if incident.state is not IncidentState.DIAGNOSIS_FAILED or self.hold_reason() is not None:
                continue
            if incident_id in self._diagnosing:
                continue
            self.start_diagnosis(incident_id, f"retry-diagnosis-{incident_id}")

    # --- decide ------------------------------------------------------------------------------------

    async def decide(self, decision: Decision) -> DecisionResult:
        """Honour a person's decision only if it is still valid; otherwise say why and change nothing."""
        return await approval.decide(self, decision)

    # --- apply, restart, verify --------------------------------------------------------------------

    async def apply_and_verify(self, proposal: Proposal, candidate: Candidate, change: Change) -> FlowResult:
        incident = self.store.incident(proposal.incident_id)
        runtime = self.runtime(incident.service)
        async with runtime.repo_lock:
            result = await apply.apply_and_verify(self, runtime, incident, proposal, candidate, change)
        self.results.append(result)
        return result

    # --- time-driven and recovery ------------------------------------------------------------------

    async def expire_due(self) -> None:
        self._start_due_retries()
        await recovery.sweep(self)
        await self.deadlines_due()

    async def deadlines_due(self) -> None:
        """Remind about and expire the pending proposals whose time has come (the deadline timer calls
        this at the exact time, the periodic job as a safety net; the lock keeps one reminder one)."""
        async with self._deadlines_lock:
            now = self.clock.now()
            for proposal in self.store.pending_proposals():
                status = policy.expiry_status(
                    proposal,
                    now,
                    self.config.approval.reminder_before_s,
                    self.store.was_reminded(proposal.id),
                )
                incident = self.store.incident(proposal.incident_id)
                if status is policy.ExpiryStatus.EXPIRED:
                    await approval.expire(self, proposal, incident)
                elif status is policy.ExpiryStatus.REMIND:
                    self.store.mark_reminded(proposal.id)
                    minutes = max(1, round((proposal.expires_at - now) / 60))
                    await self.channel.remind(
                        incident,
                        proposal,
                        f"reminder: #{incident.id} {incident.service} has a fix waiting; it expires in {minutes} min",
                    )

    def next_deadline(self) -> float | None:
        """The earliest reminder or expiry among the pending proposals."""
        before = self.config.approval.reminder_before_s
        return min(
            (
                policy.next_deadline(p, before, self.store.was_reminded(p.id))
                for p in self.store.pending_proposals()
            ),
            default=None,
        )

    def deadlines_changed(self) -> None:
        self.deadlines.changed()

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
        return await diagnosis.diagnose_on_demand(self, service, actor)

    async def diagnose_again(self, proposal_token: str, actor: str) -> str:
        """Diagnose again on a card whose fix was reverted, now, without the reverted fix."""
        target, message = await diagnosis.diagnose_again(self, proposal_token, actor)
        if target is not None:
            self.start_diagnosis(target, f"diagnose-again-{target}")
        return message

    def offers_diagnose_again(self, incident: Incident) -> bool:
        return diagnosis.offers_diagnose_again(self, incident)

    async def revert_change(self, change_id: int, actor: str) -> str:
        """Operator-requested undo of a healbot commit: exactly that commit, then restart."""
        return await apply.revert_by_operator(self, change_id, actor)
