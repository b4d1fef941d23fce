"""RunbookHealer and RestartHealer: no commit, digest-bound, fail closed when HEAD moved."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bot.errors import HealerError, StaleProposalError
from bot.interfaces import HealContext
from bot.models import Candidate, Fix, FixKind, Risk
from healers.command import RunbookHealer
from healers.restart import RestartHealer
from tests.helpers import git, make_repo

WRITE_MARKER = (
    "import os, pathlib, sys\n"
    "pathlib.Path('ran.txt').write_text(os.getcwd())\n"
    "print('cleared', len(sys.argv) - 1, 'caches')\n"
    "print('token visible:', 'HEALBOT_TELEGRAM_TOKEN' in os.environ)\n"
)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "svc", {"app.py": "print('hi')\n"})


def context(repo: Path, **options: object) -> HealContext:
    runbooks = {
        "clear-cache": (sys.executable, "-c", WRITE_MARKER, "a", "b"),
        "fail": (sys.executable, "-c", "import sys; print('disk full'); sys.exit(4)"),
        "hang": (sys.executable, "-c", "import time; time.sleep(60)"),
        "missing": ("/nonexistent/healbot-runbook",),
    }
    return HealContext(service="svc", repo=str(repo), runbooks=runbooks, **options)  # type: ignore[arg-type]


def runbook_fix(name: str | None) -> Fix:
    return Fix(rank=1, title=f"run {name}", rationale="", risk=Risk.LOW, kind=FixKind.RUNBOOK, runbook=name)


def restart_fix() -> Fix:
    return Fix(rank=1, title="Restart svc", rationale="crash loop", risk=Risk.LOW, kind=FixKind.RESTART)


def test_runbook_success_runs_the_configured_argv_in_the_repo(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEALBOT_TELEGRAM_TOKEN", "123:secret")
    ctx = context(repo)
    base = git(repo, "rev-parse", "HEAD")
    candidate = RunbookHealer().prepare(ctx, runbook_fix("clear-cache"), base)
    assert candidate.diff == ""
    assert len(candidate.digest) == 64

    applied = RunbookHealer().apply(ctx, candidate, base, {})

    assert applied.commit is None
    assert "runbook 'clear-cache' succeeded" in applied.detail
    assert "cleared 2 caches" in applied.detail
    assert "token visible: False" in applied.detail
    assert (repo / "ran.txt").read_text() == str(repo.resolve())
    assert git(repo, "rev-parse", "HEAD") == base


def test_unknown_or_missing_runbook_name_is_refused(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    with pytest.raises(HealerError, match=r"unknown runbook 'rm-rf' for svc \(configured: clear-cache, fail"):
        RunbookHealer().prepare(context(repo), runbook_fix("rm-rf"), base)
    with pytest.raises(HealerError, match="must name a runbook"):
        RunbookHealer().prepare(context(repo), runbook_fix(None), base)


def test_failing_runbook_raises_with_its_output(repo: Path) -> None:
    ctx = context(repo)
    base = git(repo, "rev-parse", "HEAD")
    candidate = RunbookHealer().prepare(ctx, runbook_fix("fail"), base)
    with pytest.raises(HealerError, match=r"(?s)runbook 'fail' failed \(exit 4\).*disk full"):
        RunbookHealer().apply(ctx, candidate, base, {})


def test_hanging_runbook_is_killed(repo: Path) -> None:
    ctx = context(repo, check_timeout_s=0.5)
    base = git(repo, "rev-parse", "HEAD")
    candidate = RunbookHealer().prepare(ctx, runbook_fix("hang"), base)
    with pytest.raises(HealerError, match=r"timed out after 0\.5s"):
        RunbookHealer().apply(ctx, candidate, base, {})


def test_missing_runbook_binary_is_a_healer_error(repo: Path) -> None:
    ctx = context(repo)
    base = git(repo, "rev-parse", "HEAD")
    candidate = RunbookHealer().prepare(ctx, runbook_fix("missing"), base)
    with pytest.raises(HealerError, match="command not found"):
        RunbookHealer().apply(ctx, candidate, base, {})


def test_runbook_changed_after_approval_is_stale_and_not_run(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    candidate = RunbookHealer().prepare(context(repo), runbook_fix("clear-cache"), base)
    changed = HealContext(
        service="svc", repo=str(repo), runbooks={"clear-cache": (sys.executable, "-c", WRITE_MARKER, "a")}
    )
    with pytest.raises(StaleProposalError):
        RunbookHealer().apply(changed, candidate, base, {})
    tampered = Candidate(candidate.fix, "", "0" * 64)
    with pytest.raises(StaleProposalError):
        RunbookHealer().apply(context(repo), tampered, base, {})
    assert not (repo / "ran.txt").exists()


def test_runbook_refused_when_head_moved(repo: Path) -> None:
    ctx = context(repo)
    base = git(repo, "rev-parse", "HEAD")
    candidate = RunbookHealer().prepare(ctx, runbook_fix("clear-cache"), base)
    (repo / "app.py").write_text("print('new')\n")
    git(repo, "commit", "-q", "-am", "operator commit")
    with pytest.raises(StaleProposalError, match="the repo moved"):
        RunbookHealer().apply(ctx, candidate, base, {})
    assert not (repo / "ran.txt").exists()


def test_runbook_has_nothing_to_undo(repo: Path) -> None:
    with pytest.raises(HealerError, match="nothing to revert"):
        RunbookHealer().undo(context(repo), git(repo, "rev-parse", "HEAD"), {})


def test_restart_candidate_is_empty_and_makes_no_commit(repo: Path) -> None:
    ctx = context(repo)
    base = git(repo, "rev-parse", "HEAD")
    candidate = RestartHealer().prepare(ctx, restart_fix(), base)
    assert (candidate.diff, candidate.stats.files, candidate.check_passed) == ("", 0, None)

    applied = RestartHealer().apply(ctx, candidate, base, {"Approved-By": "console"})

    assert applied.commit is None
    assert git(repo, "rev-parse", "HEAD") == base
    with pytest.raises(HealerError, match="nothing to revert"):
        RestartHealer().undo(ctx, base, {})


def test_restart_digest_binds_service_and_head(repo: Path) -> None:
    ctx = context(repo)
    base = git(repo, "rev-parse", "HEAD")
    candidate = RestartHealer().prepare(ctx, restart_fix(), base)
    other = HealContext(service="other", repo=str(repo))
    assert RestartHealer().prepare(other, restart_fix(), base).digest != candidate.digest
    with pytest.raises(StaleProposalError, match="digest"):
        RestartHealer().apply(other, candidate, base, {})
    (repo / "app.py").write_text("print('new')\n")
    git(repo, "commit", "-q", "-am", "operator commit")
    with pytest.raises(StaleProposalError, match="the repo moved"):
        RestartHealer().apply(ctx, candidate, base, {})


def test_wrong_kinds_are_refused(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    with pytest.raises(HealerError, match="cannot"):
        RestartHealer().prepare(context(repo), runbook_fix("fail"), base)
    with pytest.raises(HealerError, match="cannot"):
        RunbookHealer().prepare(context(repo), restart_fix(), base)


def test_abbreviated_and_full_base_give_the_same_binding(repo: Path) -> None:
    ctx = context(repo)
    base = git(repo, "rev-parse", "HEAD")
    candidate = RestartHealer().prepare(ctx, restart_fix(), base[:8])
    assert candidate.digest == RestartHealer().prepare(ctx, restart_fix(), base).digest
    assert RestartHealer().apply(ctx, candidate, base, {}).commit is None
    with pytest.raises(HealerError, match="does not exist"):
        RunbookHealer().prepare(ctx, runbook_fix("clear-cache"), "0" * 40)
