"""Landing a planned commit (healers.git_landing) on a real repo: finishing each half-done state a kill
can leave, and refusing, touching nothing, whatever healbot did not write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bot.errors import DirtyTreeError, GitError, StaleProposalError
from healers import git_landing
from healers.git_repo import GitRepo
from tests.helpers import git, make_repo

DIFF = (
    "diff --git a/app.py b/app.py\n--- a/app.py\n+++ b/app.py\n@@ -1 +1 @@\n-old\n+new\n"
    "diff --git a/gone.txt b/gone.txt\ndeleted file mode 100644\n--- a/gone.txt\n+++ /dev/null\n"
    "@@ -1 +0,0 @@\n-bye\n"
    "diff --git a/sub/added.txt b/sub/added.txt\nnew file mode 100644\n--- /dev/null\n+++ b/sub/added.txt\n"
    "@@ -0,0 +1 @@\n+hello\n"
)
MESSAGE = "healbot: test\n\nHealbot-Digest: x\n"


# A landing in its own process that SIGKILLs itself at one checkpoint: a real kill -9 right there.
_LAND_AND_DIE = """
import os, signal, sys
from healers import git_landing
from healers.git_repo import GitRepo
repo, sha, step = sys.argv[1:]
def checkpoint(name):
    if name == step:
        os.kill(os.getpid(), signal.SIGKILL)
git_landing.land(GitRepo(repo), sha, checkpoint)
"""


def planned(tmp_path: Path) -> tuple[GitRepo, str, str]:
    repo = make_repo(tmp_path / "repo", {"app.py": "old\n", "gone.txt": "bye\n", "keep.txt": "k\n"})
    (repo / "mine.txt").write_text("operator's\n")
    grepo = GitRepo(repo)
    base = grepo.head()
    return grepo, base, grepo.plan_apply(DIFF, base, MESSAGE)


def interrupt_at(grepo: GitRepo, sha: str, step: str) -> None:
    """Land `sha` in a child process killed with SIGKILL at `step`."""
    child = subprocess.run([sys.executable, "-c", _LAND_AND_DIE, str(grepo.root), sha, step], check=False)
    assert child.returncode == -signal.SIGKILL


def assert_landed(grepo: GitRepo, sha: str) -> None:
    root = grepo.root
    assert grepo.head() == sha
    assert git(root, "status", "--porcelain") == "?? mine.txt"
    assert (root / "app.py").read_text() == "new\n" and not (root / "gone.txt").exists()
    assert (root / "sub" / "added.txt").read_text() == "hello\n"
    assert (root / "mine.txt").read_text() == "operator's\n"
    assert not list((root / ".git").glob("*.lock")) and not list((root / ".git").glob("healbot-index-*"))


def test_planning_touches_nothing_the_operator_sees(tmp_path: Path) -> None:
    grepo, base, sha = planned(tmp_path)
    assert grepo.head() == base and git(grepo.root, "status", "--porcelain") == "?? mine.txt"
    assert git(grepo.root, "config", "--list", "--local").count("healbot") == 0
    assert git(grepo.root, "log", "-1", "--format=%an <%ae>", sha) == "healbot <healbot@localhost>"


@pytest.mark.parametrize("step", [git_landing.WORKTREE_UPDATED, git_landing.INDEX_UPDATED])
def test_a_landing_interrupted_at_each_step_is_finished_exactly(tmp_path: Path, step: str) -> None:
    grepo, base, sha = planned(tmp_path)
    interrupt_at(grepo, sha, step)
    assert grepo.head() == base  # the ref moves last
    assert git_landing.land(grepo, sha) == sha
    assert_landed(grepo, sha)
    assert git_landing.land(grepo, sha) == sha  # idempotent
    assert int(git(grepo.root, "rev-list", "--count", "HEAD")) == 2


def test_half_written_paths_are_finished_whatever_subset_was_written(tmp_path: Path) -> None:
    grepo, _, sha = planned(tmp_path)
    (grepo.root / "app.py").write_text("new\n")  # one path done, the others not yet
    assert git_landing.land(grepo, sha) == sha
    assert_landed(grepo, sha)


@pytest.mark.parametrize("path", ["app.py", "sub/added.txt", "keep.txt"])
def test_a_path_someone_else_changed_is_refused_and_nothing_is_touched(tmp_path: Path, path: str) -> None:
    grepo, base, sha = planned(tmp_path)
    interrupt_at(grepo, sha, git_landing.WORKTREE_UPDATED)
    (grepo.root / path).parent.mkdir(parents=True, exist_ok=True)
    (grepo.root / path).write_text("the operator's own edit\n")
    before = {p: p.read_bytes() for p in grepo.root.rglob("*") if p.is_file() and ".git" not in p.parts}
    with pytest.raises(DirtyTreeError, match="changed outside healbot"):
        git_landing.land(grepo, sha)
    after = {p: p.read_bytes() for p in grepo.root.rglob("*") if p.is_file() and ".git" not in p.parts}
    assert after == before and grepo.head() == base


def test_an_index_lock_healbot_did_not_leave_is_reported_and_kept(tmp_path: Path) -> None:
    grepo, base, sha = planned(tmp_path)
    lock = grepo.root / ".git" / "index.lock"
    lock.write_bytes(b"someone else's")
    with pytest.raises(GitError, match=r"index\.lock exists"):
        git_landing.land(grepo, sha)
    assert lock.read_bytes() == b"someone else's" and grepo.head() == base
    assert (grepo.root / "app.py").read_text() == "old\n"


def test_our_own_index_lock_and_temporary_files_are_recognised_and_removed(tmp_path: Path) -> None:
    grepo, _, sha = planned(tmp_path)
    git_dir = grepo.root / ".git"
    staged = git_dir / f"healbot-index-{sha[:12]}"
    staged.write_bytes((git_dir / "index").read_bytes())
    os.link(staged, git_dir / "index.lock")  # what a kill inside the index swap leaves
    git_landing.temp_name(grepo.root / "app.py", sha).write_text("half")
    ref_lock = git_dir / "refs" / "heads" / "main.lock"
    ref_lock.write_text(sha[:20])  # git killed while writing the new id into its ref lock
    assert git_landing.land(grepo, sha) == sha
    assert_landed(grepo, sha)


def test_a_repo_that_moved_is_refused(tmp_path: Path) -> None:
    grepo, _, sha = planned(tmp_path)
    (grepo.root / "keep.txt").write_text("k2\n")
    git(grepo.root, "commit", "-qam", "operator moves on")
    with pytest.raises(StaleProposalError, match="the repo moved"):
        git_landing.land(grepo, sha)


def test_a_revert_is_planned_then_landed_without_revert_head(tmp_path: Path) -> None:
    grepo, _, sha = planned(tmp_path)
    git_landing.land(grepo, sha)
    revert = grepo.plan_revert(sha, {"Healbot-Incident": "1"})
    interrupt_at(grepo, revert, git_landing.INDEX_UPDATED)
    assert not (grepo.root / ".git" / "REVERT_HEAD").exists()
    assert git_landing.land(grepo, revert) == revert
    assert (grepo.root / "app.py").read_text() == "old\n" and (grepo.root / "gone.txt").read_text() == "bye\n"
    assert not (grepo.root / "sub").exists()
    assert git(grepo.root, "status", "--porcelain") == "?? mine.txt"
