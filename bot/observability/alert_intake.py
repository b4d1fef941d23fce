"""Alerts into incidents: a firing alert that names a configured service opens (or counts into) an
incident of kind "alert", which then goes the usual way (diagnosis, card, approval).

- Its labels and annotations are the evidence, redacted like log text (`Pipeline.scrub`).
- The same alert again (Alertmanager repeats firing alerts) counts into the same open incident.
- A resolved alert closes its incident when healbot has done nothing for it yet (no change, no card
  decided; during a diagnosis, once it ends); once a change was made it is evidence for the verdict instead: while an alert fires, each poll
  counts it as one error of its fingerprint in the error ledger the verdict compares, so an alert that
  resolves after the change makes the target error go away, one that keeps firing leaves it the same.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bot.config import HealbotConfig
from bot.health import ErrorLedger
from bot.interfaces import ApprovalChannel, Clock
from bot.models import Fingerprint, Incident, IncidentState, ProposalStatus
from bot.observability.alerts import Alert, AlertStatus
from bot.store import Observation, Store

log = logging.getLogger("healbot.alerts")

SOURCE_PREFIX = "alertmanager:"
MAX_FIRING = 1000  # alerts remembered as firing (a flood of distinct alerts forgets the oldest)
FIRING_FORGET_S = 24 * 3600.0  # not repeated for this long: Alertmanager lost it; stop counting it
# states in which healbot has not acted yet: a resolved alert closes the incident
_NOTHING_DONE = frozenset(
    {IncidentState.OPEN, IncidentState.DIAGNOSIS_FAILED, IncidentState.AWAITING_APPROVAL}
)


class AlertFlow(Protocol):
    """The pipeline as the intake sees it (bot/pipeline.py's Pipeline)."""

    config: HealbotConfig
    store: Store
    channel: ApprovalChannel
    clock: Clock
    ledger: ErrorLedger
    auto_diagnose: bool

    def scrub(self, text: str) -> str: ...

    def maybe_diagnose(self, incident: Incident) -> bool: ...


@dataclass
class IntakeReport:
    opened: list[int] = field(default_factory=list)
    counted: list[int] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)
    noted: list[int] = field(default_factory=list)
    ignored: int = 0  # no configured service named

    def as_json(self) -> dict[str, object]:
        return {
            "opened": self.opened,
            "counted": self.counted,
            "closed": self.closed,
            "noted": self.noted,
            "ignored": self.ignored,
        }


class AlertIntake:
    def __init__(self, flow: AlertFlow) -> None:
        self._flow = flow
        self._firing: dict[tuple[str, str], float] = {}  # (service, fingerprint) → last notified
        self._closing: dict[int, tuple[str, str, str]] = {}  # incident → (service, fingerprint, alert name)

    async def receive(self, alerts: Sequence[Alert]) -> IntakeReport:
        report = IntakeReport()
        label = self._flow.config.alerts.service_label
        for alert in alerts:
            service = alert.label(label)
            if service is None or service not in self._flow.config.services:
                report.ignored += 1
                continue
            if alert.status is AlertStatus.FIRING:
                await self._fired(service, alert, report)
            else:
                await self._resolved(service, alert, report)
        return report

    async def after_poll(self) -> None:
        """Each poll: a firing alert counts as one error of its fingerprint (see the module); an alert that
        resolved during its incident's diagnosis closes it once that ended with nothing applied."""
        self._count_firing()
        if self._closing:
            await self._close_after_diagnosis()

    def _count_firing(self) -> None:
        now = self._flow.clock.now()
        for (service, key), notified in list(self._firing.items()):
            if now - notified > FIRING_FORGET_S:
                del self._firing[(service, key)]
            else:
                self._flow.ledger.record(service, key, now)

    def firing(self) -> int:
        return len(self._firing)

    async def _fired(self, service: str, alert: Alert, report: IntakeReport) -> None:
        flow = self._flow
        now = flow.clock.now()
        key = alert.fingerprint_key()
        fingerprint = Fingerprint(
            key=key,
            service=service,
            is_error=True,
            exception_type=None,
            template=flow.scrub(alert.title())[:300],
        )
        ingested = flow.store.ingest(
            SOURCE_PREFIX + service,
            json.dumps({"at": now}),
            [Observation(fingerprint, flow.scrub(alert.evidence()), now)],
            max_samples=flow.config.max_samples,
            at=now,
        )
        self._remember(service, key, now)
        flow.ledger.record(service, key, now)
        for item in ingested:
            (report.opened if item.is_new else report.counted).append(item.incident.id)
            if item.is_new:
                log.info("alert %s opened incident #%d of %s", alert.name, item.incident.id, service)
            if flow.auto_diagnose:
                flow.maybe_diagnose(item.incident)

    def _remember(self, service: str, key: str, now: float) -> None:
        self._firing.pop((service, key), None)
        self._firing[(service, key)] = now
        while len(self._firing) > MAX_FIRING:
            del self._firing[next(iter(self._firing))]

    async def _resolved(self, service: str, alert: Alert, report: IntakeReport) -> None:
        flow = self._flow
        key = alert.fingerprint_key()
        self._firing.pop((service, key), None)
        found = flow.store.latest_incident_of(service, key)
        if found is None:
            report.ignored += 1
            return
        incident_id, changed = found
        incident = flow.store.incident(incident_id)
        name = flow.scrub(alert.name)
        if not changed and incident.state in _NOTHING_DONE:
            if await self._close_untouched(incident, service, name):
                report.closed.append(incident_id)
            else:
                report.noted.append(incident_id)
            return
        if not changed and incident.state is IncidentState.DIAGNOSING:
            self._closing[incident_id] = (service, key, name)  # closed once the diagnosis ends
            message = f"the alert {name} resolved during the diagnosis: closed when it ends, nothing applied"
        elif changed:
            message = f"the alert {name} resolved after healbot's change: evidence that the fix worked"
        else:
            message = f"the alert {name} resolved while the incident was {incident.state.value}"
        report.noted.append(incident_id)
        await flow.channel.progress(incident, message)
        await flow.channel.notify(f"#{incident_id} {service}: {message}")

    async def _close_untouched(self, incident: Incident, service: str, name: str) -> bool:
        """Close an incident healbot has not acted on; False when a person decided its card meanwhile."""
        flow = self._flow
        now = flow.clock.now()
        message = f"the alert {name} resolved before healbot acted: closed, nothing was applied"
        proposal = flow.store.latest_proposal(incident.id)
        if proposal is not None and proposal.status is ProposalStatus.PENDING:
            closed = flow.store.close_proposal(
                proposal,
                ProposalStatus.SUPERSEDED,
                None,
                incident_state=IncidentState.RESOLVED,
                message=message,
                at=now,
            )
            if not closed:  # someone decided meanwhile: their decision stands
                return False
        else:
            flow.store.set_state(incident.id, IncidentState.RESOLVED, at=now, detail=message)
        await flow.channel.progress(incident, message)
        await flow.channel.notify(f"#{incident.id} {service}: {message}")
        return True

    async def _close_after_diagnosis(self) -> None:
        """Alerts that resolved while their incident was being diagnosed: close what is still untouched."""
        flow = self._flow
        for incident_id, (service, key, name) in list(self._closing.items()):
            incident = flow.store.incident(incident_id)
            if incident.state is IncidentState.DIAGNOSING:
                continue
            del self._closing[incident_id]
            found = flow.store.latest_incident_of(service, key)
            if (service, key) in self._firing or found != (incident_id, False):
                continue  # firing again, or acted on
            if incident.state in _NOTHING_DONE:
                await self._close_untouched(incident, service, name)
