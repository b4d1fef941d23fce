"""Pure decisions: throttles, pauses, mutes, approval expiry, circuit breakers, maintenance windows,
outcome memory. No I/O: callers pass in what the store and the service manager said."""

from __future__ import annotations

import enum
import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from bot.models import (
    Candidate,
    Change,
    ChangeStatus,
    Fingerprint,
    Fix,
    FixKind,
    Proposal,
    ServiceState,
)

PAUSED_UNTIL = "paused_until"
MUTE_PREFIX = "mute:"
FOREVER = float("inf")
SNOOZE_S = 3600.0  # what the Snooze button moves a proposal's reminder and expiry by

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 60.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ExpiryStatus(enum.Enum):
    LIVE = "live"
    REMIND = "remind"
    EXPIRED = "expired"


def should_diagnose(last_diagnosed_at: float | None, now: float, every_s: float) -> bool:
    """A fingerprint is diagnosed at most once per `every_s` while open."""
    return last_diagnosed_at is None or now - last_diagnosed_at >= every_s


def is_active_until(value: str | None, now: float) -> bool:
    """Settings like `paused_until` hold a unix time (or "inf"); active while now is before it."""
    if value is None:
        return False
    try:
        return now < float(value)
    except ValueError:
        return True  # an unreadable pause is a pause: fail closed


def expiry_status(proposal: Proposal, now: float, reminder_before_s: float, reminded: bool) -> ExpiryStatus:
    """Expiry is fail-closed: past `expires_at` a proposal is EXPIRED, never approved."""
    if now >= proposal.expires_at:
        return ExpiryStatus.EXPIRED
    if not reminded and now >= reminder_at(proposal, reminder_before_s):
        return ExpiryStatus.REMIND
    return ExpiryStatus.LIVE


def reminder_at(proposal: Proposal, reminder_before_s: float) -> float:
    """`reminder_before_s` before expiry, and never while a snooze lasts."""
    return max(proposal.expires_at - reminder_before_s, proposal.snoozed_until or 0.0)


def next_deadline(proposal: Proposal, reminder_before_s: float, reminded: bool) -> float:
    """When this pending proposal needs the bot next: its reminder, else its expiry."""
    return proposal.expires_at if reminded else reminder_at(proposal, reminder_before_s)


def awaits_decision(change: Change) -> bool:
    """Applied and kept for now, but the verdict left keep-or-revert to a person."""
    return (
        change.status is ChangeStatus.NEEDS_HUMAN and change.commit is not None and not change.revert_commit
    )


def snoozed(proposal: Proposal, now: float, snooze_s: float = SNOOZE_S) -> tuple[float, float]:
    """A snooze pressed at `now`: (snoozed until, the new expiry); expiry and reminder move by `snooze_s`."""
    return now + snooze_s, proposal.expires_at + snooze_s


def parse_duration(text: str) -> float:
    """`90s`, `15m`, `2h`, `1d`, or a bare number of minutes → seconds. Raises ValueError."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30m, 2h or 1d")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    return seconds


DAY_S = 86400.0
MAX_DELETED_FILES = 2
MAX_REMOVED_LINES = 500
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(
    r"^\s*(?:(?P<day>[A-Za-z]{3})\s+)?(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*$"
)


@dataclass(frozen=True, slots=True)
class Limits:
    """How much the bot may do by itself before it only escalates."""

    fixes_per_fingerprint_per_day: int = 3
    restarts_per_service: int = 3
    restart_window_s: float = 1800.0
    applies_per_day: int = 10


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """A daily (or weekly, with `weekday`) UTC window, minutes since midnight; may wrap past midnight."""

    start_min: int
    end_min: int
    weekday: int | None = None  # 0 = Monday

    def contains(self, now: float) -> bool:
        moment = datetime.fromtimestamp(now, UTC)
        minute = moment.hour * 60 + moment.minute
        if self.start_min <= self.end_min:
            inside, day = self.start_min <= minute < self.end_min, moment.weekday()
        elif minute >= self.start_min:
            inside, day = True, moment.weekday()
        else:
            inside, day = minute < self.end_min, (moment.weekday() - 1) % 7  # the window began yesterday
        return inside and (self.weekday is None or self.weekday == day)


def parse_window(text: str) -> MaintenanceWindow:
    """`02:00-04:00` (every day, UTC) or `sun 02:00-04:00`. Raises ValueError naming the problem."""
    match = _WINDOW.match(text)
    if not match:
        raise ValueError(f'{text!r} is not a window like "02:00-04:00" or "sun 02:00-04:00" (UTC)')
    weekday = None
    if match.group("day"):
        day = match.group("day").lower()
        if day not in WEEKDAYS:
            raise ValueError(f"{text!r}: {match.group('day')!r} is not a weekday ({', '.join(WEEKDAYS)})")
        weekday = WEEKDAYS.index(day)
    start, end = _minutes(match.group("start"), text), _minutes(match.group("end"), text)
    if start == end:
        raise ValueError(f"{text!r} is empty: start and end are the same")
    return MaintenanceWindow(start, end, weekday)


def _minutes(hhmm: str, text: str) -> int:
    hours, minutes = (int(part) for part in hhmm.split(":"))
    if hours > 23 or minutes > 59:
        raise ValueError(f"{text!r}: {hhmm} is not a time of day")
    return hours * 60 + minutes


def in_maintenance(windows: Iterable[MaintenanceWindow], now: float) -> bool:
    return any(window.contains(now) for window in windows)


def breaker_reason(
    limits: Limits,
    now: float,
    *,
    fingerprint_applies: Sequence[float],
    all_applies: Sequence[float],
    service_restarts: Sequence[float],
    restarts_needed: bool = True,
) -> str | None:
    """Why no more automatic remediation is allowed now, or None. Arguments are the times of earlier
    applies (of this fingerprint, of any) and of restarts the bot issued for this service."""
    day_ago = now - DAY_S
    fingerprint_count = sum(1 for t in fingerprint_applies if t > day_ago)
    if fingerprint_count >= limits.fixes_per_fingerprint_per_day:
        return (
            f"circuit breaker: {fingerprint_count} fixes were already applied for this error in the last 24 h "
            f"(limit {limits.fixes_per_fingerprint_per_day}); escalating to a human instead"
        )
    total = sum(1 for t in all_applies if t > day_ago)
    if total >= limits.applies_per_day:
        return (
            f"circuit breaker: {total} fixes were applied in the last 24 h across all services "
            f"(limit {limits.applies_per_day}); escalating to a human instead"
        )
    window_start = now - limits.restart_window_s
    restarts = sum(1 for t in service_restarts if t > window_start)
    if restarts_needed and restarts >= limits.restarts_per_service:
        return (
            f"circuit breaker: healbot restarted this service {restarts} times in the last "
            f"{limits.restart_window_s / 60:.0f} min (limit {limits.restarts_per_service}); escalating to a human instead"
        )
    return None


def manager_storm_reason(state: ServiceState, detail: str = "") -> str | None:
    """The process manager is already fighting a crash loop or gave up: never fight it with restarts."""
    if state in (ServiceState.CRASH_LOOP, ServiceState.FATAL):
        extra = f" ({detail})" if detail else ""
        return (
            f"the process manager reports {state.value}{extra}: it is already restarting or has given up; "
            "healbot will not add restarts; please look"
        )
    return None


def fix_signature(fix: Fix) -> tuple[object, ...]:
    """What makes two fixes the same, whatever their rank, title or wording."""
    if fix.kind is FixKind.PATCH:
        return (fix.kind.value, tuple((e.path, e.old, e.new) for e in fix.edits))
    if fix.kind is FixKind.RUNBOOK:
        return (fix.kind.value, fix.runbook)
    if fix.kind is FixKind.REVERT_COMMIT:
        return (fix.kind.value, fix.commit)
    return (fix.kind.value,)


def was_reverted_before(fix: Fix, reverted: Iterable[Fix]) -> bool:
    """Outcome memory: a fix whose change was reverted for this fingerprint is never proposed again."""
    signature = fix_signature(fix)
    return any(fix_signature(old) == signature for old in reverted)


def in_grace(last_restart_at: float | None, now: float, grace_s: float) -> bool:
    """The bot's own restart makes noise: for `grace_s` after it errors are recorded but not diagnosed; one
    that occurs again after the grace is diagnosed then. (The verification window after a fix's restart
    is always such a grace.)"""
    return last_restart_at is not None and 0 <= now - last_restart_at < grace_s


def destructive_reason(candidate: Candidate) -> str | None:
    """A diff that deletes much of the repo is never proposed, however it was produced."""
    deleted = candidate.diff.count("\ndeleted file mode ") + candidate.diff.startswith("deleted file mode ")
    if deleted > MAX_DELETED_FILES:
        return f"the diff deletes {deleted} files (at most {MAX_DELETED_FILES} may be deleted by a fix)"
    if candidate.stats.removed > MAX_REMOVED_LINES:
        return f"the diff removes {candidate.stats.removed} lines (at most {MAX_REMOVED_LINES} by a fix)"
    return None


BASELINE_MAX_LOOKBACK_S = 3600.0


def baseline_start(
    now: float, window_s: float, last_seen: float, max_lookback_s: float = BASELINE_MAX_LOOKBACK_S
) -> float:
    """Where the "before" window of a change starts. It covers at least `window_s` and reaches back to the
    incident's last occurrence, because an operator may approve minutes after the error was last logged
    (a window that missed it would make a working fix look inconclusive), but never more than
    `max_lookback_s`. Counts are compared as rates, so a longer window does not inflate "before"."""
    start = min(now - window_s, last_seen - 0.001)
    return max(start, now - max(window_s, max_lookback_s))


# --- flood limits ----------------------------------------------------------------------------------

STORM_KEY_PREFIX = "storm:"  # the fingerprint key of a service's "error storm" summary incident


def storm_fingerprint(service: str, cap: int, period_s: float) -> Fingerprint:
    """The one incident per service that counts the errors found beyond its cap of new incidents."""
    minutes = f"{period_s / 60:g} min" if period_s >= 60 else f"{period_s:g} s"
    return Fingerprint(
        key=f"{STORM_KEY_PREFIX}{service}",
        service=service,
        is_error=True,
        exception_type=None,
        template=f"error storm: more than {cap} new distinct errors in {minutes}; the rest are counted here",
    )


def is_storm(fingerprint_key: str) -> bool:
    return fingerprint_key.startswith(STORM_KEY_PREFIX)


class WindowBudget:
    """At most `per_key` uses per key and `total` in all within any `period_s`. Memory is bounded by the
    caps: only the times of the uses still inside the period are kept. Times are passed in (pure)."""

    def __init__(self, per_key: int, total: int, period_s: float) -> None:
        if per_key < 1 or total < 1 or period_s <= 0:
            raise ValueError(
                f"WindowBudget needs caps >= 1 and a period > 0, not {per_key}, {total}, {period_s}"
            )
        self.per_key = per_key
        self.total = total
        self.period_s = period_s
        self._by_key: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()

    def allowance(self, key: str, now: float) -> int:
        """How many more uses `key` may have now."""
        self._expire(now)
        used = len(self._by_key.get(key, ()))
        return max(0, min(self.per_key - used, self.total - len(self._all)))

    def charge(self, key: str, now: float, uses: int = 1) -> None:
        self._expire(now)
        times = self._by_key.setdefault(key, deque())
        for _ in range(uses):
            times.append(now)
            self._all.append(now)

    def _expire(self, now: float) -> None:
        horizon = now - self.period_s
        while self._all and self._all[0] <= horizon:
            self._all.popleft()
        for key, times in list(self._by_key.items()):
            while times and times[0] <= horizon:
                times.popleft()
            if not times:
                del self._by_key[key]
