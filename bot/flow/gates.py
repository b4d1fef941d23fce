"""Whether anything may be proposed or applied now: pause, maintenance windows, mutes, circuit breakers.

Queries only: the rules are `bot.policy`'s; this module reads the facts they need from the store.
"""

from __future__ import annotations

from bot import policy
from bot.config import HealbotConfig
from bot.models import ChangeStatus, FixKind
from bot.store import Store

RESTART_EVENT_PREFIX = "restart:"
_NOT_APPLIED = (ChangeStatus.FAILED,)


def is_paused(store: Store, now: float) -> bool:
    return policy.is_active_until(store.get_setting(policy.PAUSED_UNTIL), now)


def in_maintenance(config: HealbotConfig, now: float) -> bool:
    windows = (policy.parse_window(w) for w in config.policy.maintenance_windows)
    return policy.in_maintenance(windows, now)


def hold_reason(config: HealbotConfig, store: Store, now: float) -> str | None:
    """Why nothing may be proposed or applied right now (detection carries on), or None."""
    if is_paused(store, now):
        return "healbot is paused: nothing is applied until /resume"
    if in_maintenance(config, now):
        return "inside a maintenance window: nothing is proposed or applied until it ends"
    return None


def is_muted(store: Store, fingerprint_key: str, now: float) -> bool:
    return policy.is_active_until(store.get_setting(policy.MUTE_PREFIX + fingerprint_key), now)


def breaker_reason(
    config: HealbotConfig, store: Store, now: float, service: str, fingerprint: str, kind: FixKind | None
) -> str | None:
    limits = config.policy
    day_ago = now - policy.DAY_S
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
            for c in store.changes_since(day_ago, service=service, fingerprint=fingerprint)
            if c.status not in _NOT_APPLIED
        ],
        all_applies=[c.created_at for c in store.changes_since(day_ago) if c.status not in _NOT_APPLIED],
        service_restarts=store.audit_times(
            RESTART_EVENT_PREFIX + service, since=now - limits.restart_window_s
        ),
        restarts_needed=kind is not FixKind.RUNBOOK,
    )
