"""Pure decisions about time: throttles, pauses, mutes, approval expiry. No I/O."""

from __future__ import annotations

import enum
import re

from bot.models import Proposal

PAUSED_UNTIL = "paused_until"
MUTE_PREFIX = "mute:"
FOREVER = float("inf")

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
    if not reminded and now >= proposal.expires_at - reminder_before_s:
        return ExpiryStatus.REMIND
    return ExpiryStatus.LIVE


def parse_duration(text: str) -> float:
    """`90s`, `15m`, `2h`, `1d`, or a bare number of minutes → seconds. Raises ValueError."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30m, 2h or 1d")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    return seconds
