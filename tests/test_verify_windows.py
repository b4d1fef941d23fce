"""Which errors count "before" and which "after" a change: the lines a service logged while healbot was
busy (diagnosing, landing the commit) are read by a poll of their own, so they are counted with the
process that wrote them. Found against a real container that logs an error every 0.2 s
(tests/test_docker_real.py::test_a_traceback_in_docker_logs_is_fixed_restarted_and_kept): a working fix
was judged worse and reverted."""

from __future__ import annotations

import pytest

from bot.faults import Step
from bot.flow import apply
from tests.fakes.world import World, make_world, traceback_lines

__all__ = ["make_world"]  # the fixture


async def test_errors_logged_since_the_last_poll_count_in_the_before_window(make_world) -> None:  # type: ignore[no-untyped-def]
    """Regression: the "before" window ended when the apply began, and the errors read by the apply's own
    first poll were stamped after that end: a service that kept failing looked error-free before."""
    world: World = await make_world()
    _incident, proposal = await world.incident_with_proposal()
    for _ in range(3):  # logged while the operator read the card
        world.append(traceback_lines(world.repo))

    await world.approve(proposal)
    await world.pipeline.wait_idle()

    [result] = world.pipeline.results
    assert result.change is not None
    before = world.store.baseline(result.change.id)
    assert before is not None
    assert before.errors_total >= 3, before  # the three since the last poll (and the first, if recent)


async def test_errors_the_old_process_logged_while_the_change_landed_are_not_after_it(
    make_world, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """Regression: lines the old process wrote between the apply's first poll and the restart were read
    only after the restart and counted against the fix, which was then reverted."""
    world: World = await make_world()
    _incident, proposal = await world.incident_with_proposal()
    real_hit = apply.faults.hit

    def old_process_still_failing(step: Step) -> None:
        real_hit(step)
        if step is Step.COMMIT_MADE:
            for _ in range(3):
                world.append(traceback_lines(world.repo))

    monkeypatch.setattr(apply.faults, "hit", old_process_still_failing)

    await world.approve(proposal)
    await world.pipeline.wait_idle()

    [result] = world.pipeline.results
    assert result.action == "kept", world.out.getvalue()
