"""Remediation that cannot run away: circuit breakers, maintenance windows, the grace window after the bot's
own restart, restart storms of the process manager, and outcome memory. Pure functions first, then the
real pipeline (real git, the real claude binary against the fake Messages API)."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.models import Edit, Fix, FixKind, IncidentState, ProposalStatus, Risk, ServiceState, ServiceStatus
from bot.policy import (
    DAY_S,
    Limits,
    MaintenanceWindow,
    breaker_reason,
    fix_signature,
    in_grace,
    in_maintenance,
    manager_storm_reason,
    parse_window,
    was_reverted_before,
)
from tests.helpers import git
from tests.test_pipeline import FIX, World, make_world, traceback_lines

__all__ = ["make_world"]  # the fixture, shared with the pipeline tests

NOW = 1_800_000_000.0
LIMITS = Limits(
    fixes_per_fingerprint_per_day=3, restarts_per_service=3, restart_window_s=1800, applies_per_day=10
)


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# --- pure policy ----------------------------------------------------------------------------------


def test_under_every_limit_nothing_trips() -> None:
    assert (
        breaker_reason(
            LIMITS, NOW, fingerprint_applies=[NOW - 10] * 2, all_applies=[NOW] * 9, service_restarts=[NOW] * 2
        )
        is None
    )


def test_three_fixes_for_one_fingerprint_in_a_day_trip_it() -> None:
    reason = breaker_reason(
        LIMITS, NOW, fingerprint_applies=[NOW - 100] * 3, all_applies=[], service_restarts=[]
    )
    assert reason and "3 fixes were already applied for this error" in reason and "limit 3" in reason
    # older than a day: forgotten
    assert (
        breaker_reason(
            LIMITS, NOW, fingerprint_applies=[NOW - DAY_S - 1] * 3, all_applies=[], service_restarts=[]
        )
        is None
    )


def test_ten_applies_a_day_across_services_trip_it() -> None:
    reason = breaker_reason(
        LIMITS, NOW, fingerprint_applies=[], all_applies=[NOW - 5] * 10, service_restarts=[]
    )
    assert reason and "across all services" in reason


def test_three_restarts_in_thirty_minutes_trip_it_unless_no_restart_is_needed() -> None:
    restarts = [NOW - 60, NOW - 600, NOW - 1700]
    reason = breaker_reason(LIMITS, NOW, fingerprint_applies=[], all_applies=[], service_restarts=restarts)
    assert reason and "restarted this service 3 times in the last 30 min" in reason
    assert (
        breaker_reason(
            LIMITS,
            NOW,
            fingerprint_applies=[],
            all_applies=[],
            service_restarts=restarts,
            restarts_needed=False,
        )
        is None
    )
    old = [NOW - 1801] * 5
    assert breaker_reason(LIMITS, NOW, fingerprint_applies=[], all_applies=[], service_restarts=old) is None


@pytest.mark.parametrize(
    ("window", "inside", "outside"),
    [
        ("02:00-04:00", "2026-11-26T02:00:00", "2026-11-26T04:00:00"),
        ("23:30-00:30", "2026-11-27T00:10:00", "2026-11-26T23:29:00"),
        ("sun 02:00-04:00", "2026-11-29T03:00:00", "2026-11-26T03:00:00"),  # 29 Nov 2026 is a Sunday
        ("sat 23:00-01:00", "2026-11-29T00:30:00", "2026-11-30T00:30:00"),  # began on Saturday evening
    ],
)
def test_maintenance_windows(window: str, inside: str, outside: str) -> None:
    parsed = parse_window(window)
    assert in_maintenance([parsed], at(inside))
    assert not in_maintenance([parsed], at(outside))


def test_a_window_is_a_value() -> None:
    assert parse_window("Sun 2:00-4:30") == MaintenanceWindow(120, 270, 6)
    assert not in_maintenance([], NOW)


@pytest.mark.parametrize(
    "text", ["", "always", "02:00", "2-4", "02:00-24:00", "someday 01:00-02:00", "05:00-05:00"]
)
def test_bad_windows_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_window(text)


def test_the_grace_window_after_healbots_own_restart() -> None:
    assert in_grace(NOW - 10, NOW, 60)
    assert not in_grace(NOW - 60, NOW, 60)
    assert not in_grace(None, NOW, 60)
    assert not in_grace(NOW - 1, NOW, 0)


@pytest.mark.parametrize(
    ("state", "storm"),
    [
        (ServiceState.FATAL, True),
        (ServiceState.CRASH_LOOP, True),
        (ServiceState.RUNNING, False),
        (ServiceState.STOPPED, False),
        (ServiceState.UNKNOWN, False),
    ],
)
def test_a_restart_storm_of_the_manager_is_never_fought(state: ServiceState, storm: bool) -> None:
    reason = manager_storm_reason(state, "start-limit-hit")
    assert (reason is not None) is storm
    if reason:
        assert "will not add restarts" in reason and "start-limit-hit" in reason


def test_outcome_memory_matches_the_same_fix_whatever_its_wording() -> None:
    edit = Edit("app.py", "a", "b")
    reverted = Fix(1, "Old title", "old words", Risk.LOW, FixKind.PATCH, (edit,))
    same = Fix(2, "New title", "new words", Risk.HIGH, FixKind.PATCH, (edit,))
    other = Fix(1, "Old title", "old words", Risk.LOW, FixKind.PATCH, (Edit("app.py", "a", "c"),))
    assert was_reverted_before(same, [reverted])
    assert not was_reverted_before(other, [reverted])
    assert fix_signature(Fix(1, "r", "r", Risk.LOW, FixKind.RUNBOOK, runbook="flush")) != fix_signature(
        Fix(1, "r", "r", Risk.LOW, FixKind.RUNBOOK, runbook="clear")
    )


# --- through the real pipeline ----------------------------------------------------------------------


def with_policy(world: World, **changes: Any) -> None:
    config = world.pipeline.config
    world.pipeline.config = dataclasses.replace(config, policy=dataclasses.replace(config.policy, **changes))


async def settle(world: World) -> None:
    await world.pipeline.poll_once()
    await world.pipeline.poll_once()
    await world.pipeline.wait_idle()


async def test_a_tripped_breaker_escalates_once_and_applies_nothing(make_world) -> None:  # type: ignore[no-untyped-def]
    world: World = await make_world()
    with_policy(world, fixes_per_fingerprint_per_day=1, grace_after_restart_s=0)
    _, proposal = await world.incident_with_proposal()
    await world.approve(proposal)
    await world.pipeline.wait_idle()
    assert [r.action for r in world.pipeline.results] == ["kept"]
    head = git(world.repo, "rev-parse", "HEAD")

    for _ in range(3):  # the same error again, three times: one escalation, one message
        world.append(traceback_lines(world.repo))
        await settle(world)
    incidents = world.store.incidents()
    assert len(incidents) == 2
    second = incidents[0] if incidents[0].id != proposal.incident_id else incidents[1]
    assert second.state is IncidentState.NEEDS_HUMAN
    said = world.out.getvalue()
    assert said.count("circuit breaker: 1 fixes were already applied for this error") == 1, said
    assert len(world.fake.message_requests()) == 1  # no diagnosis for the escalated incident
    assert git(world.repo, "rev-parse", "HEAD") == head


async def test_a_breaker_tripped_after_proposing_refuses_the_approval(make_world) -> None:  # type: ignore[no-untyped-def]
    world: World = await make_world()
    _, proposal = await world.incident_with_proposal()
    with_policy(world, restarts_per_service=1)
    world.store.audit("healbot", "restart:svc", "restart issued", at=time.time())
    message = await world.approve(proposal)
    assert "circuit breaker" in message and "nothing was applied" in message
    assert world.store.proposal(proposal.id).status is ProposalStatus.PENDING
    assert git(world.repo, "rev-list", "--count", "HEAD") == "1"


async def test_inside_a_maintenance_window_errors_are_counted_but_nothing_is_proposed_or_applied(
    make_world,
) -> None:  # type: ignore[no-untyped-def]
    world: World = await make_world()
    _, proposal = await world.incident_with_proposal()
    with_policy(world, maintenance_windows=("00:00-23:59",))
    message = await world.approve(proposal)
    assert "maintenance window" in message
    world.append(traceback_lines(world.repo, exc="ValueError: bad", func="other"))
    await settle(world)
    assert len(world.store.incidents()) == 2  # detection continues
    assert len(world.fake.message_requests()) == 1  # nothing new diagnosed
    assert git(world.repo, "rev-list", "--count", "HEAD") == "1"


async def test_no_new_diagnosis_in_the_grace_window_after_healbots_own_restart(make_world) -> None:  # type: ignore[no-untyped-def]
    world: World = await make_world(answer={"summary": "s", "candidates": [FIX]})
    with_policy(world, grace_after_restart_s=3600)
    _, proposal = await world.incident_with_proposal()
    await world.approve(proposal)
    await world.pipeline.wait_idle()
    world.append(traceback_lines(world.repo, exc="ValueError: restart noise", func="boot"))
    await settle(world)
    noise = [i for i in world.store.incidents() if i.exception_type == "ValueError"]
    assert noise and noise[0].state is IncidentState.OPEN
    assert len(world.fake.message_requests()) == 1


async def test_an_error_first_seen_in_the_grace_window_was_never_diagnosed(make_world) -> None:  # type: ignore[no-untyped-def]
    """Issue 17.8: with the documented 60 s grace, an error born right after healbot's restart of the service
    is start-up noise while the grace lasts; still there after it, it gets its diagnosis."""
    world: World = await make_world(answer={"summary": "s", "candidates": [FIX]})
    assert world.pipeline.config.policy.grace_after_restart_s == 60.0  # the default
    _, proposal = await world.incident_with_proposal()
    await world.approve(proposal)
    await world.pipeline.wait_idle()
    world.append(traceback_lines(world.repo, exc="ValueError: still broken", func="boot"))
    await settle(world)
    assert len(world.fake.message_requests()) == 1  # in the grace: counted, not diagnosed
    world.clock.offset = 61.0
    world.append(traceback_lines(world.repo, exc="ValueError: still broken", func="boot"))
    await settle(world)
    assert len(world.fake.message_requests()) == 2  # after the grace: diagnosed
    assert "still broken" in str(world.fake.message_requests()[-1])


class FatalManager:
    """The service manager's answer when it gave up (supervisord FATAL, systemd start-limit-hit)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.service = inner.service
        self.restarts = 0

    def status(self) -> ServiceStatus:
        return ServiceStatus(ServiceState.FATAL, detail="Exited too quickly")

    def restart(self, settle_s: float) -> ServiceStatus:
        self.restarts += 1
        return self.inner.restart(settle_s)

    def log_paths(self) -> list[str]:
        return []

    def check(self) -> None:
        return None


async def test_a_manager_in_fatal_is_not_restarted_and_the_fix_is_reverted(make_world) -> None:  # type: ignore[no-untyped-def]
    world: World = await make_world()
    runtime = world.pipeline.services["svc"]
    manager = FatalManager(runtime.manager)
    runtime.manager = manager
    _, proposal = await world.incident_with_proposal()
    await world.approve(proposal)
    await world.pipeline.wait_idle()
    [result] = world.pipeline.results
    assert manager.restarts == 0
    assert "reports fatal (Exited too quickly)" in world.out.getvalue()
    assert result.action == "reverted"


async def test_a_reverted_fix_is_never_proposed_again_and_the_prompt_says_it_failed(make_world) -> None:  # type: ignore[no-untyped-def]
    world: World = await make_world(answer={"summary": "s", "candidates": [FIX]}, restart='["false"]')
    with_policy(world, grace_after_restart_s=0)
    incident, proposal = await world.incident_with_proposal()
    await world.approve(proposal)
    await world.pipeline.wait_idle()
    assert [r.action for r in world.pipeline.results] == ["reverted"]

    world.clock.offset = 2 * 3600  # past the diagnosis throttle of the fingerprint
    world.append(traceback_lines(world.repo))
    await settle(world)
    again = [i for i in world.store.incidents() if i.id != incident.id]
    assert len(again) == 1 and again[0].state is IncidentState.DIAGNOSIS_FAILED
    assert again[0].error and "was applied before and reverted; not proposed again" in again[0].error
    assert world.store.latest_proposal(again[0].id) is None
    prompt = str(world.fake.message_requests()[-1])
    assert "reverted" in prompt
