"""Operator actions shared by Telegram and the CLI: pause, resume, mute, status, incidents, history.

Pure over the store and the pipeline: no chat, no printing. Callers render the typed results.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bot import policy
from bot.errors import HealbotError
from bot.models import Change, Incident, Verdict
from bot.pipeline import Pipeline

PAUSE_USAGE = "/pause [duration], e.g. /pause 2h (no duration: until /resume)"
MUTE_USAGE = "/mute <fingerprint> [duration], e.g. /mute 3f2a9c1b 1d (no duration: for good)"
HISTORY_USAGE = "/history [service]"


class UsageError(HealbotError):
    """The operator's arguments are wrong; the message is a one-line usage hint."""


@dataclass(frozen=True, slots=True)
class ServiceSummary:
    name: str
    open_incidents: int
    source_problems: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StatusSummary:
    services: tuple[ServiceSummary, ...]
    open_incidents: int
    pending_approvals: int
    paused_until: float | None  # None: not paused; math.inf: until /resume
    muted: tuple[tuple[str, float], ...]  # (fingerprint, until)
    runner: str


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    change: Change
    verdict: Verdict | None
    reasons: tuple[str, ...]


def parse_optional_duration(args: Sequence[str], usage: str) -> float | None:
    """No argument → None (indefinitely); one duration like 30m, 2h, 1d → seconds; anything else → UsageError."""
    if not args:
        return None
    if len(args) > 1:
        raise UsageError(f"usage: {usage}")
    try:
        return policy.parse_duration(args[0])
    except ValueError as exc:
        raise UsageError(f"{exc}; usage: {usage}") from None


def _until(now: float, duration_s: float | None) -> float:
    return math.inf if duration_s is None else now + duration_s


def _active_until(value: str | None, now: float) -> float | None:
    if not policy.is_active_until(value, now):
        return None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return math.inf


def pause(pipeline: Pipeline, actor: str, duration_s: float | None) -> float:
    """Kill switch: nothing is proposed or applied until the returned time (inf = until resume)."""
    now = pipeline.clock.now()
    until = _until(now, duration_s)
    pipeline.store.set_setting(policy.PAUSED_UNTIL, repr(until), actor=actor, at=now)
    return until


def resume(pipeline: Pipeline, actor: str) -> bool:
    """Lift the pause; returns whether healbot was paused. The incidents held back meanwhile are
    diagnosed now (each as if seen again), not only when they recur."""
    was_paused = pipeline.is_paused()
    pipeline.store.set_setting(policy.PAUSED_UNTIL, None, actor=actor, at=pipeline.clock.now())
    if was_paused:
        pipeline.diagnose_held()
    return was_paused


def known_fingerprints(pipeline: Pipeline) -> set[str]:
    return {i.fingerprint for i in pipeline.store.incidents(limit=10_000)}


def mute(pipeline: Pipeline, fingerprint: str, actor: str, duration_s: float | None) -> float:
    """Stop diagnosing one fingerprint until the returned time. Unknown fingerprints are refused."""
    if fingerprint not in known_fingerprints(pipeline):
        raise UsageError(f"no incident has the fingerprint {fingerprint!r}; see /incidents")
    now = pipeline.clock.now()
    until = _until(now, duration_s)
    pipeline.store.set_setting(policy.MUTE_PREFIX + fingerprint, repr(until), actor=actor, at=now)
    return until


NEWSESSION_USAGE = "/newsession <service>"


def new_session(pipeline: Pipeline, service: str, actor: str) -> bool:
    """The service's next diagnosis starts a fresh Claude session; False when it had none."""
    if service not in pipeline.services:
        services = ", ".join(pipeline.services)
        raise UsageError(f"unknown service {service!r}; usage: {NEWSESSION_USAGE}; services: {services}")
    from bot.flow import sessions

    return sessions.reset(pipeline.store, service, actor=actor, now=pipeline.clock.now())


def status(pipeline: Pipeline) -> StatusSummary:
    now = pipeline.clock.now()
    store = pipeline.store
    open_incidents = store.incidents(open_only=True, limit=10_000)
    services = tuple(
        ServiceSummary(
            name=name,
            open_incidents=sum(1 for i in open_incidents if i.service == name),
            source_problems=tuple(sorted(runtime.source_errors.values())),
        )
        for name, runtime in pipeline.services.items()
    )
    muted = []
    for fp in sorted({i.fingerprint for i in store.incidents(limit=10_000)}):
        until = _active_until(store.get_setting(policy.MUTE_PREFIX + fp), now)
        if until is not None:
            muted.append((fp, until))
    return StatusSummary(
        services=services,
        open_incidents=len(open_incidents),
        pending_approvals=len(store.pending_proposals()),
        paused_until=_active_until(store.get_setting(policy.PAUSED_UNTIL), now),
        muted=tuple(muted),
        runner=pipeline.runner.name,
    )


def open_incidents(pipeline: Pipeline, limit: int = 20) -> list[Incident]:
    return pipeline.store.incidents(open_only=True, limit=limit)


def history(pipeline: Pipeline, service: str | None = None, limit: int = 10) -> list[HistoryEntry]:
    """Recent changes, newest first, each with its last verdict."""
    if service is not None and service not in pipeline.services:
        raise UsageError(f"unknown service {service!r}; configured: {', '.join(pipeline.services)}")
    entries = []
    for change in pipeline.store.changes(service=service, limit=limit):
        outcomes = pipeline.store.outcomes(change.id)
        last = outcomes[-1] if outcomes else None
        entries.append(HistoryEntry(change, last.verdict if last else None, last.reasons if last else ()))
    return entries


def parse_change_id(args: Sequence[str], usage: str) -> int:
    if len(args) != 1 or not args[0].lstrip("#").isdigit():
        raise UsageError(f"usage: {usage}")
    return int(args[0].lstrip("#"))
