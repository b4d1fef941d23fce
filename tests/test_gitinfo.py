"""bot.gitinfo: read-only facts from real repositories."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot import gitinfo
from bot.errors import GitError
from tests.helpers import git, make_repo


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "svc", {"app/main.py": "x = 1\n", "README.md": "hello\n"})


def commit(repo: Path, path: str, text: str, message: str) -> str:
    target = repo / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    git(repo, "add", path)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def test_head_and_short(repo: Path) -> None:
    sha = gitinfo.head(repo)
    assert sha == git(repo, "rev-parse", "HEAD")
    assert len(sha) == 40
    assert gitinfo.short(sha) == sha[:7]


def test_head_of_a_non_repo_is_a_git_error(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="failed"):
        gitinfo.head(tmp_path)


def test_is_dirty_lists_tracked_changes(repo: Path) -> None:
    assert gitinfo.is_dirty(repo) == []
    (repo / "README.md").write_text("changed\n")
    (repo / "app/new.py").write_text("y = 2\n")
    (repo / "app/main.py").write_text("x = 2\n")
    git(repo, "add", "app/main.py")
    assert gitinfo.is_dirty(repo) == ["README.md", "app/main.py"]
    assert gitinfo.is_dirty(repo, include_untracked=True) == ["README.md", "app/main.py", "app/new.py"]


def test_recent_commits_for_paths(repo: Path) -> None:
    first = commit(repo, "app/main.py", "x = 2\n", "bump x")
    commit(repo, "README.md", "docs\n", "docs only")
    third = commit(repo, "app/main.py", "x = 3\n", "bump x again")

    lines = gitinfo.recent_commits(repo, ["app/main.py"], n=5)

    assert [line.split(" ", 2)[0] for line in lines[:2]] == [third[:7], first[:7]]
    assert lines[0].endswith(" bump x again")
    assert lines[0].split(" ")[1] == git(repo, "log", "-1", "--date=short", "--format=%ad")
    assert len(lines) == 3  # the two bumps and the initial commit
    assert len(gitinfo.recent_commits(repo, [], n=2)) == 2
    assert gitinfo.recent_commits(repo, ["no/such/file.py"]) == []
    assert gitinfo.recent_commits(repo, ["*.py"]) == []  # paths are literal, never globs


def test_show_file(repo: Path) -> None:
    old = git(repo, "rev-parse", "HEAD")
    commit(repo, "app/main.py", "x = 2\n", "bump x")
    assert gitinfo.show_file(repo, "app/main.py") == "x = 2\n"
    assert gitinfo.show_file(repo, "app/main.py", rev=old) == "x = 1\n"
    assert gitinfo.show_file(repo, "app/missing.py") is None
    assert gitinfo.show_file(repo, "../etc/passwd") is None
    assert gitinfo.show_file(repo, "/etc/passwd") is None
    with pytest.raises(GitError, match="not a revision"):
        gitinfo.show_file(repo, "app/main.py", rev="--output=x")


def test_commit_exists(repo: Path) -> None:
    sha = gitinfo.head(repo)
    assert gitinfo.commit_exists(repo, sha)
    assert gitinfo.commit_exists(repo, sha[:7])
    assert not gitinfo.commit_exists(repo, "0" * 40)
    assert not gitinfo.commit_exists(repo, "--all")
    blob = git(repo, "rev-parse", "HEAD:README.md")
    assert not gitinfo.commit_exists(repo, blob)


def healbot_commit(repo: Path, digest: str) -> str:
    (repo / "app/main.py").write_text(f"x = '{digest}'\n")
    git(repo, "add", "app/main.py")
    message = f"healbot: fix x\n\nWhy it helps.\n\nHealbot-Incident: 3\nHealbot-Digest: {digest}\nApproved-By: console\n"
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def test_commit_with_trailer_finds_the_apply_commit(repo: Path) -> None:
    base = gitinfo.head(repo)
    applied = healbot_commit(repo, "d1" * 32)
    prose = commit(
        repo, "README.md", "later\n", f"later work\n\nThis mentions Healbot-Digest: {'d1' * 32} in prose."
    )
    assert not gitinfo.is_healbot_commit(repo, prose)
    assert gitinfo.commit_with_trailer(repo, "Healbot-Digest", "d1" * 32) == applied
    assert gitinfo.commit_with_trailer(repo, "healbot-digest", "d1" * 32, since_rev=base) == applied
    assert gitinfo.commit_with_trailer(repo, "Healbot-Digest", "d1" * 32, since_rev=applied) is None
    assert gitinfo.commit_with_trailer(repo, "Healbot-Digest", "ff" * 32) is None
    assert gitinfo.commit_with_trailer(repo, "Healbot-Digest", "d1") is None  # exact values only


def test_is_healbot_commit(repo: Path) -> None:
    human = gitinfo.head(repo)
    bot = healbot_commit(repo, "ab" * 32)
    assert gitinfo.is_healbot_commit(repo, bot)
    assert not gitinfo.is_healbot_commit(repo, human)
    assert not gitinfo.is_healbot_commit(repo, "0" * 40)
    assert [key for key, _ in gitinfo.trailers(repo, bot)] == [
        "Healbot-Incident",
        "Healbot-Digest",
        "Approved-By",
    ]
