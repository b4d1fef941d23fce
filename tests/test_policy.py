from __future__ import annotations

import pytest

from bot.models import Proposal, ProposalStatus
from bot.policy import (
    ExpiryStatus,
    baseline_start,
    expiry_status,
    is_active_until,
    parse_duration,
    should_diagnose,
)


def proposal(expires_at: float) -> Proposal:
    return Proposal(1, 1, "tok", "b" * 40, (), 0.0, expires_at, ProposalStatus.PENDING)


def test_a_fingerprint_is_diagnosed_at_most_once_per_window() -> None:
    assert should_diagnose(None, 100.0, 3600.0)
    assert not should_diagnose(100.0, 3699.0, 3600.0)
    assert should_diagnose(100.0, 3700.0, 3600.0)


def test_expiry_is_fail_closed_with_one_reminder() -> None:
    p = proposal(1000.0)
    assert expiry_status(p, 100.0, 600.0, reminded=False) is ExpiryStatus.LIVE
    assert expiry_status(p, 500.0, 600.0, reminded=False) is ExpiryStatus.REMIND
    assert expiry_status(p, 500.0, 600.0, reminded=True) is ExpiryStatus.LIVE
    assert expiry_status(p, 1000.0, 600.0, reminded=True) is ExpiryStatus.EXPIRED


def test_pause_values_fail_closed() -> None:
    assert not is_active_until(None, 5.0)
    assert is_active_until("10", 5.0)
    assert not is_active_until("10", 11.0)
    assert is_active_until("inf", 1e12)
    assert is_active_until("garbage", 5.0)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), ("5", 300)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-1h", "0m", "1w"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_the_before_window_reaches_back_to_the_last_occurrence() -> None:
    """Regression: an approval given more than one health window after the error was last logged measured
    an empty "before", so a working fix came out SAME/INCONCLUSIVE instead of BETTER."""
    assert baseline_start(now=1000.0, window_s=30.0, last_seen=990.0) == 970.0
    assert baseline_start(now=1000.0, window_s=30.0, last_seen=700.0) == pytest.approx(699.999)
    assert baseline_start(now=10_000.0, window_s=30.0, last_seen=100.0) == 10_000.0 - 3600.0
