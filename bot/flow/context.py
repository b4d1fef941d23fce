"""What the steps share: a service's live objects, the result of a run, and the coordinator's surface."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.config import HealbotConfig, ServiceConfig
from bot.grouping import Grouper
from bot.health import ErrorLedger
from bot.interfaces import ApprovalChannel, Clock, HealContext, Healer, LogSource, Runner, ServiceManager
from bot.models import Candidate, Change, FixKind, Incident, Proposal, Verdict
from bot.records import RecordAssembler
from bot.store import Store

LOGGER_NAME = "healbot.pipeline"  # one name for the whole flow, as operators filter it


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


class Flow(Protocol):
    """The coordinator as the steps see it. `config` and `services` are replaced on a reload, so a step
    reads them here each time and never keeps its own copy."""

    config: HealbotConfig
    store: Store
    runner: Runner
    channel: ApprovalChannel
    services: Mapping[str, ServiceRuntime]
    healers: Mapping[FixKind, Healer]
    clock: Clock
    ledger: ErrorLedger
    grouper: Grouper
    retry_backoff_s: float
    last_restart: dict[str, float]

    def scrub(self, text: str) -> str: ...

    def spawn(self, coro: Coroutine[Any, Any, object], name: str) -> None: ...

    def runtime(self, service: str) -> ServiceRuntime: ...

    def hold_reason(self) -> str | None: ...

    def deadlines_changed(self) -> None:
        """A proposal's reminder or expiry was set or moved: the deadline timer is set again."""

    def breaker_reason(self, service: str, fingerprint: str, kind: FixKind | None = None) -> str | None: ...

    async def poll_once(self) -> list[Incident]: ...

    async def diagnose_incident(self, incident_id: int, *, actor: str = "healbot") -> Proposal | None: ...

    async def apply_and_verify(
        self, proposal: Proposal, candidate: Candidate, change: Change
    ) -> FlowResult: ...
