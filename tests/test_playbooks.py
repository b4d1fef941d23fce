"""Deterministic playbooks when Claude cannot help: labelled as such, materialised and approved like any
other candidate; a failed diagnosis is reported with its reason and retried with backoff."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bot.models import FixKind, Frame, Incident, IncidentState, ServiceState
from bot.playbooks import LABEL, playbook_fixes, restart_fix, revert_fix
from tests.helpers import git, make_repo
from tests.test_pipeline import World, make_world, traceback_lines

__all__ = ["make_world"]  # the fixture, shared with the pipeline tests

APP = 'PRICES = {"apple": 120}\n\n\ndef total(name):\n    return PRICES[name]\n'


def incident(repo: Path, path: str = "app.py", first_seen: float | None = None) -> Incident:
    now = time.time() if first_seen is None else first_seen
    return Incident(
        id=1,
        service="svc",
        fingerprint="f" * 16,
        title="KeyError",
        state=IncidentState.OPEN,
        first_seen=now,
        last_seen=now,
        count=1,
        samples=("KeyError: 'pear'",),
        exception_type="KeyError",
        frames=(
            Frame(path="/usr/lib/python3.11/json/decoder.py", line=1, function="x"),
            Frame(path=f"{repo}/{path}", line=5, function="total"),
        ),
    )


def commit(repo: Path, message: str, text: str, *, date: str | None = None, trailer: str = "") -> str:
    (repo / "app.py").write_text(text)
    git(repo, "add", "app.py")
    env_date = {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date} if date else {}
    old = {k: os.environ.get(k) for k in env_date}
    os.environ.update(env_date)
    try:
        git(repo, "commit", "-q", "-m", message + (f"\n\n{trailer}" if trailer else ""))
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return git(repo, "rev-parse", "HEAD")


def test_the_suspect_commit_on_the_failing_file_is_offered_as_a_labelled_revert(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "svc", {"app.py": APP})
    sha = commit(repo, "strict prices", APP.replace("120", "125"))
    fix = revert_fix(incident(repo), repo)
    assert fix is not None
    assert fix.kind is FixKind.REVERT_COMMIT and sha.startswith(fix.commit or "-")
    assert fix.title.startswith(LABEL) and "strict prices" in fix.title
    assert "no LLM" in fix.rationale


@pytest.mark.parametrize("case", ["first commit", "healbot's own", "older than a week", "frame outside"])
def test_no_revert_is_offered_when_the_commit_is_not_a_suspect(tmp_path: Path, case: str) -> None:
    repo = make_repo(tmp_path / "svc", {"app.py": APP, "other.py": "x = 1\n"})
    path = "app.py"
    if case == "healbot's own":
        commit(repo, "healbot fix", APP.replace("120", "1"), trailer="Healbot-Incident: 3")
    elif case == "older than a week":
        commit(repo, "old change", APP.replace("120", "2"), date="2020-01-01T00:00:00")
    elif case == "frame outside":
        commit(repo, "a change", APP.replace("120", "3"))
        path = "../elsewhere/app.py"
    assert revert_fix(incident(repo, path), repo) is None


@pytest.mark.parametrize(
    ("state", "offered"),
    [
        (ServiceState.STOPPED, True),
        (ServiceState.CRASH_LOOP, False),  # the manager is already restarting: never fought
        (ServiceState.FATAL, False),
        (ServiceState.RUNNING, False),
        (ServiceState.UNKNOWN, False),
        (None, False),
    ],
)
def test_a_restart_is_offered_only_for_a_crashed_service(state: ServiceState | None, offered: bool) -> None:
    fix = restart_fix(state, "svc")
    assert (fix is not None) is offered
    if fix is not None:
        assert fix.kind is FixKind.RESTART and fix.title.startswith(LABEL)


def test_playbooks_rank_the_revert_first(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "svc", {"app.py": APP})
    commit(repo, "strict prices", APP.replace("120", "125"))
    kinds = [f.kind for f in playbook_fixes(incident(repo), repo=repo, state=ServiceState.STOPPED)]
    assert kinds == [FixKind.REVERT_COMMIT, FixKind.RESTART]


async def test_claude_logged_out_reports_the_reason_and_offers_the_playbook_which_applies(make_world) -> None:  # type: ignore[no-untyped-def]
    world: World = await make_world()
    suspect = commit(
        world.repo, "lookup without default", world.repo.joinpath("app.py").read_text() + "\n# strict\n"
    )
    world.fake.default_scenario = "auth"
    world.append(traceback_lines(world.repo))
    await world.pipeline.poll_once()
    await world.pipeline.poll_once()
    await world.pipeline.wait_idle()
    [found] = world.store.incidents()
    said = world.out.getvalue()
    assert "diagnosis failed" in said
    proposal = world.store.latest_proposal(found.id)
    assert proposal is not None, said
    assert "Deterministic playbooks are offered instead" in proposal.summary
    [candidate] = proposal.candidates
    assert candidate.fix.kind is FixKind.REVERT_COMMIT and candidate.fix.title.startswith(LABEL)
    assert "-# strict" in candidate.diff
    assert world.store.incident(found.id).state is IncidentState.AWAITING_APPROVAL

    await world.approve(proposal)
    await world.pipeline.wait_idle()
    assert [r.action for r in world.pipeline.results] == ["kept"], world.out.getvalue()
    assert "# strict" not in (world.repo / "app.py").read_text()
    assert git(world.repo, "rev-parse", "HEAD~1") == suspect


async def test_a_failed_diagnosis_without_playbooks_is_retried_with_backoff_then_left_failed(
    make_world,
) -> None:  # type: ignore[no-untyped-def]
    world: World = await make_world()
    world.fake.default_scenario = "server_error"
    world.append(traceback_lines(world.repo))
    await world.pipeline.poll_once()
    await world.pipeline.poll_once()
    await world.pipeline.wait_idle()
    [found] = world.store.incidents()
    assert world.store.incident(found.id).state is IncidentState.DIAGNOSIS_FAILED
    assert len(world.fake.message_requests()) == 1

    await world.pipeline.expire_due()  # not due yet: the first retry waits retry_backoff_s
    await world.pipeline.wait_idle()
    assert len(world.fake.message_requests()) == 1

    world.pipeline.retry_backoff_s = 0.0
    world.clock.offset += 3600
    for _ in range(6):
        world.clock.offset += 3600
        await world.pipeline.expire_due()
        await world.pipeline.wait_idle()
    requests = len(world.fake.message_requests())
    assert requests == 4, requests  # the first run and three retries, then no more
    assert world.store.incident(found.id).state is IncidentState.DIAGNOSIS_FAILED
    assert world.out.getvalue().count("diagnosis failed") == 4
