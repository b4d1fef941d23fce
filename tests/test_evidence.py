"""bot.evidence: what a diagnosis sees, from a real repo; never anything outside it."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from bot.errors import GitError
from bot.evidence import collect_evidence, numbered_snippet, repo_relative
from bot.models import Frame, Incident, IncidentState
from tests.helpers import git, make_repo

MAIN = "".join(f"line {n}\n" for n in range(1, 31))
HELPER = "def helper():\n    raise KeyError('password=hunter2')\n"


def redact(text: str) -> str:
    return re.sub(r"password=[^\s)']+", "password=[REDACTED]", text)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "svc", {"app/main.py": MAIN, "app/helper.py": HELPER, "README.md": "hi\n"})


def incident(*frames: Frame, samples: tuple[str, ...] = ("boom",)) -> Incident:
    return Incident(
        id=1,
        service="svc",
        fingerprint="fp1",
        title="KeyError in helper (password=hunter2)",
        state=IncidentState.OPEN,
        first_seen=100.0,
        last_seen=200.0,
        count=3,
        samples=samples,
        exception_type="KeyError",
        frames=frames,
    )


def test_frames_inside_the_repo_get_code_context(repo: Path) -> None:
    frames = (
        Frame("/usr/lib/python3.11/threading.py", 1045, "_bootstrap_inner"),  # stdlib: skipped
        Frame(str(repo / "app/main.py"), 15, "handle"),  # absolute, inside the repo
        Frame("/srv/venv/lib/python3.11/site-packages/flask/app.py", 880, "dispatch"),  # skipped
        Frame("app/helper.py", 2, "helper"),  # relative to the repo
        Frame("<frozen importlib._bootstrap>", 1, "_call"),  # skipped
    )
    evidence = collect_evidence(
        incident(*frames, samples=("Traceback … password=hunter2",)),
        repo=repo,
        allowed_paths=("app/**",),
        runbooks=("clear-cache",),
        past_outcomes=("2026-11-21 patch 'x' → reverted",),
        redact=redact,
    )

    assert [(c.path, c.line, c.function) for c in evidence.code] == [
        ("app/main.py", 15, "handle"),
        ("app/helper.py", 2, "helper"),
    ]
    main = evidence.code[0].snippet.splitlines()
    assert main[0] == "   9 | line 9"
    assert "> 15 | line 15" in main
    assert main[-1] == "  20 | line 20"
    assert len(main) == 12
    assert evidence.head == git(repo, "rev-parse", "HEAD")
    assert evidence.recent_commits == (
        f"{evidence.head[:7]} {git(repo, 'log', '-1', '--format=%ad', '--date=short')} initial",
    )
    assert evidence.allowed_paths == ("app/**",)
    assert evidence.runbooks == ("clear-cache",)
    assert (evidence.service, evidence.fingerprint, evidence.count, evidence.exception_type) == (
        "svc",
        "fp1",
        3,
        "KeyError",
    )


def test_redaction_is_applied_to_everything_from_logs_and_code(repo: Path) -> None:
    evidence = collect_evidence(
        incident(
            Frame("app/helper.py", 2, "helper"), samples=("Traceback … password=hunter2", "again password=pw")
        ),
        repo=repo,
        allowed_paths=(),
        runbooks=(),
        past_outcomes=("reverted (worse: password=abc)",),
        redact=redact,
    )
    assert evidence.samples == ("Traceback … password=[REDACTED]", "again password=[REDACTED]")
    assert evidence.title == "KeyError in helper (password=[REDACTED])"
    assert "hunter2" not in evidence.code[0].snippet
    assert evidence.past_outcomes == ("reverted (worse: password=[REDACTED])",)


def test_code_is_read_at_head_not_from_the_working_tree(repo: Path) -> None:
    (repo / "app/main.py").write_text("uncommitted edit\n" * 30)
    evidence = collect_evidence(
        incident(Frame("app/main.py", 3, "f")),
        repo=repo,
        allowed_paths=(),
        runbooks=(),
        past_outcomes=(),
        redact=redact,
    )
    assert "> 3 | line 3" in evidence.code[0].snippet
    assert "uncommitted" not in evidence.code[0].snippet


def test_escapes_by_dotdot_and_symlink_are_skipped(repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text("SECRET = 'outside'\n" * 5)
    os.symlink(outside, repo / "app/link.py")
    os.symlink("/etc", repo / "etc_link")
    git(repo, "add", "app/link.py", "etc_link")
    git(repo, "commit", "-q", "-m", "links")
    frames = (
        Frame("../outside.py", 1, "a"),
        Frame(str(repo / "app/../../outside.py"), 1, "b"),
        Frame("app/link.py", 1, "c"),
        Frame(str(repo / "app/link.py"), 1, "d"),
        Frame("etc_link/hostname", 1, "e"),
        Frame(str(outside), 1, "f"),
        Frame(".git/config", 1, "g"),
        Frame("app/helper.py", 1, "ok"),
    )
    evidence = collect_evidence(
        incident(*frames), repo=repo, allowed_paths=(), runbooks=(), past_outcomes=(), redact=redact
    )
    assert [c.function for c in evidence.code] == ["ok"]
    assert all("outside" not in c.snippet for c in evidence.code)


def test_untracked_files_and_lines_past_the_end_are_skipped(repo: Path) -> None:
    (repo / "app/generated.py").write_text("x = 1\n")
    frames = (
        Frame("app/generated.py", 1, "gen"),
        Frame("app/helper.py", 99, "past_end"),
        Frame("app/helper.py", 0, "zero"),
    )
    evidence = collect_evidence(
        incident(*frames), repo=repo, allowed_paths=(), runbooks=(), past_outcomes=(), redact=redact
    )
    assert evidence.code == ()
    assert len(evidence.recent_commits) == 1  # no code paths: the repo's latest commits


def test_recent_commits_follow_the_frame_files(repo: Path) -> None:
    (repo / "README.md").write_text("docs\n")
    git(repo, "commit", "-q", "-am", "docs only")
    (repo / "app/helper.py").write_text(HELPER + "# touched\n")
    git(repo, "commit", "-q", "-am", "touch helper")
    evidence = collect_evidence(
        incident(Frame("app/helper.py", 2, "helper")),
        repo=repo,
        allowed_paths=(),
        runbooks=(),
        past_outcomes=(),
        redact=redact,
    )
    subjects = [line.split(" ", 2)[2] for line in evidence.recent_commits]
    assert subjects == ["touch helper", "initial"]


def test_duplicate_frames_once_and_innermost_kept(repo: Path) -> None:
    frames = (*(Frame("app/main.py", n, f"f{n}") for n in range(1, 21)), Frame("app/main.py", 20, "again"))
    evidence = collect_evidence(
        incident(*frames), repo=repo, allowed_paths=(), runbooks=(), past_outcomes=(), redact=redact
    )
    assert [c.line for c in evidence.code] == list(range(13, 21))
    assert evidence.code[-1].function == "again"


def test_not_a_repo_is_a_git_error(tmp_path: Path) -> None:
    with pytest.raises(GitError):
        collect_evidence(
            incident(), repo=tmp_path, allowed_paths=(), runbooks=(), past_outcomes=(), redact=redact
        )


def test_repo_relative_and_snippet_helpers(repo: Path) -> None:
    root = repo.resolve()
    assert repo_relative(root, str(root / "app/main.py")) == "app/main.py"
    assert repo_relative(root, "app/./main.py") == "app/main.py"
    assert repo_relative(root, "") is None
    assert repo_relative(root, str(root)) is None
    assert numbered_snippet("a\nb\n", 1) == "> 1 | a\n  2 | b"
    assert numbered_snippet("a\n", 2) == ""
