"""What a restart says about a change it cannot verify again: the card's Keep and Revert (and /revert N),
not only the host's CLI (issue 17.5: "please decide" named `healbot revert`, which a phone cannot run)."""

from __future__ import annotations

from bot.models import (
    Candidate,
    ChangeStatus,
    DiffStats,
    Edit,
    Fingerprint,
    Fix,
    FixKind,
    IncidentState,
    Risk,
)
from bot.policy import awaits_decision
from bot.recovery import recover
from bot.store import Observation
from tests.fakes.world import World, make_world

__all__ = ["make_world"]  # the fixture


async def test_a_verification_cut_by_a_restart_named_only_the_cli_to_revert(make_world) -> None:  # type: ignore[no-untyped-def]
    world: World = await make_world()
    store, now = world.store, world.clock.now()
    # a change of a service that is no longer in the config: nothing can verify it again
    fp = Fingerprint("fp1", "gone", True, "KeyError", "KeyError: <str>")
    [ing] = store.ingest(
        "file:gone", "c", [Observation(fp, "KeyError: 'x'", now - 60)], max_samples=3, at=now
    )
    fix = Fix(1, "Use get", "because", Risk.LOW, FixKind.PATCH, (Edit("app.py", "a[k]", "a.get(k)"),))
    candidate = Candidate(fix, "--- a/app.py\n+++ b/app.py\n", "d" * 64, DiffStats(1, 1, 1), True, "")
    proposal = store.create_proposal(
        ing.incident.id, base_commit="b" * 40, candidates=[candidate], summary="", at=now, expires_at=now + 60
    )
    change = store.create_change(proposal, candidate, service="gone", approved_by="alice", at=now)
    store.update_change(
        change.id, ChangeStatus.COMMITTED, at=now, commit="c" * 40, incident_state=IncidentState.VERIFYING
    )

    [note] = [n for n in await recover(world.pipeline) if n.startswith(f"#{ing.incident.id}:")]

    assert "verification of cccccccccc was interrupted by a restart" in note
    assert (
        f"Keep or Revert on the card (/revert {change.id}; on the host: healbot revert {change.id})" in note
    )
    after = store.change(change.id)
    assert after is not None and after.status is ChangeStatus.NEEDS_HUMAN
    assert awaits_decision(after)  # so the card shows the Keep and Revert the note names
