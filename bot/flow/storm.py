"""Flood limits on new incidents: how many a poll may open per service and in all (`[limits]`), and the
one chat message when a service's errors start folding into its "error storm" incident.

Beyond the caps an error of a new kind is still counted, into the storm incident of its service (one open
at a time, never diagnosed); the storm is over once a whole period passed without folding, and from then
on new kinds open incidents of their own again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from bot import policy
from bot.config import LimitsConfig
from bot.errors import HealbotError
from bot.flow.context import LOGGER_NAME, Flow
from bot.models import Fingerprint
from bot.store.incidents import Ingested

log = logging.getLogger(LOGGER_NAME)

SHOWN_TEMPLATES = 5


class StormGate:
    def __init__(self) -> None:
        self._limits: LimitsConfig | None = None
        self._budget: policy.WindowBudget | None = None
        self._storming: dict[str, float] = {}  # service -> when its errors were last folded

    def allowance(self, limits: LimitsConfig, service: str, now: float) -> int:
        """How many incidents `service` may open now."""
        return self._budget_for(limits).allowance(service, now)

    def overflow(self, limits: LimitsConfig, service: str) -> Fingerprint:
        return policy.storm_fingerprint(service, limits.new_incidents_per_service, limits.period_s)

    def storming(self, limits: LimitsConfig, service: str, now: float) -> bool:
        """True while errors of `service` were folded into its storm within the last period."""
        at = self._storming.get(service)
        return at is not None and now - at < limits.period_s

    def folded(self, service: str, now: float) -> None:
        """Errors of a storming service were just counted into its storm without the store folding them
        (bot.flow.storm_fold): the storm goes on."""
        if service in self._storming:
            self._storming[service] = now

    async def counted(self, flow: Flow, service: str, ingested: Sequence[Ingested], now: float) -> None:
        """Charge the incidents just opened; announce a storm that begins; forget the storms that ended."""
        limits = flow.config.limits
        opened = sum(1 for i in ingested if i.is_new and not policy.is_storm(i.incident.fingerprint))
        if opened:
            self._budget_for(limits).charge(service, now, opened)
        for ended in [s for s, at in self._storming.items() if now - at >= limits.period_s]:
            del self._storming[ended]
            log.warning("%s: the error storm is over; new errors open incidents of their own again", ended)
        for item in ingested:
            if item.folded == 0:
                continue
            begins = service not in self._storming
            self._storming[service] = now
            if begins:
                await self._announce(flow, limits, item)

    async def _announce(self, flow: Flow, limits: LimitsConfig, item: Ingested) -> None:
        incident = item.incident
        minutes = f"{limits.period_s / 60:g} min" if limits.period_s >= 60 else f"{limits.period_s:g} s"
        shown = "\n".join(f"- {flow.scrub(t)[:160]}" for t in item.folded_templates[:SHOWN_TEMPLATES])
        text = (
            f"#{incident.id} {incident.service}: error storm: more than {limits.new_incidents_per_service}"
            f" new distinct errors in {minutes} (at most {limits.new_incidents} in all services). {item.folded}"
            " errors of new kinds were counted here instead of opening incidents, and so are the next ones"
            f" until {minutes} pass without any; they are not diagnosed one by one. Most frequent:\n{shown}"
        )
        log.warning("%s: error storm: new kinds of errors are counted in #%d", incident.service, incident.id)
        try:
            await flow.channel.notify(text)
        except HealbotError as exc:
            log.error("could not announce the error storm of %s: %s", incident.service, exc)

    def _budget_for(self, limits: LimitsConfig) -> policy.WindowBudget:
        if self._budget is None or self._limits != limits:
            self._limits = limits
            self._budget = policy.WindowBudget(
                limits.new_incidents_per_service, limits.new_incidents, limits.period_s
            )
        return self._budget
