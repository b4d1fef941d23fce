"""PatchHealer and RevertCommitHealer against real git repositories in tmp dirs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from bot.errors import (
    DirtyTreeError,
    GitError,
    HealerError,
    PatchError,
    PathEscapeError,
    StaleProposalError,
)
from bot.interfaces import HealContext
from bot.models import Candidate, Edit, Fix, FixKind, Risk
from healers.base import check_relative_path, path_allowed, run_command
from healers.git_repo import APPLY_LOCK_NAME, DIFF_OPTIONS
from healers.patch import PatchHealer, RevertCommitHealer, compute_digest
from tests.fakes.lock_holder import hold_flock, release
from tests.helpers import git, make_repo, wait_until

APP = (
    "def total(items):\n"
    "    return sum(item.price for item in items)\n"
    "\n"
    "\n"
    "def fee(amount):\n"
    "    return amount * 0.1\n"
)
TRAILERS = {"Healbot-Incident": "7", "Healbot-Fingerprint": "fp-abc123", "Approved-By": "telegram:42"}
GUARD = Edit(
    path="app/main.py",
    old="    return sum(item.price for item in items)\n",
    new="    if not items:\n        return 0\n    return sum(item.price for item in items)\n",
)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(
        tmp_path / "svc",
        {"app/main.py": APP, "README.md": "hello\n", "config/settings.ini": "debug = false\n"},
    )


def context(repo: Path, **options: object) -> HealContext:
    return HealContext(service="svc", repo=str(repo), **options)  # type: ignore[arg-type]


def patch_fix(*edits: Edit, title: str = "Guard empty items") -> Fix:
    return Fix(
        rank=1,
        title=title,
        rationale="total() crashes on an empty list.\nReturn 0 early.",
        risk=Risk.LOW,
        kind=FixKind.PATCH,
        edits=edits,
    )


def worktrees(repo: Path) -> list[str]:
    return [
        line
        for line in git(repo, "worktree", "list", "--porcelain").splitlines()
        if line.startswith("worktree ")
    ]


def assert_untouched(repo: Path, head: str) -> None:
    """HEAD as given, nothing staged or changed, no stash, no scratch worktree left."""
    assert git(repo, "rev-parse", "HEAD") == head
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""
    assert git(repo, "stash", "list") == ""
    assert worktrees(repo) == [f"worktree {repo.resolve()}"]


def raw_git(repo: Path, *args: str) -> str:
    """git output exactly as printed (tests.helpers.git strips it)."""
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def trailer_value(repo: Path, sha: str, key: str) -> str:
    return git(repo, "log", "-1", f"--format=%(trailers:key={key},valueonly)", sha)


# --- the happy path ---------------------------------------------------------------------------------


def test_good_patch_prepare_apply_undo_end_to_end(repo: Path) -> None:
    healer = PatchHealer()
    ctx = context(repo)
    base = git(repo, "rev-parse", "HEAD")

    candidate = healer.prepare(ctx, patch_fix(GUARD), base)

    assert candidate.diff.startswith("diff --git a/app/main.py b/app/main.py\n")
    assert "+    if not items:\n+        return 0\n" in candidate.diff
    assert (candidate.stats.files, candidate.stats.added, candidate.stats.removed) == (1, 2, 0)
    assert candidate.digest == compute_digest(candidate.diff, base, FixKind.PATCH, {"service": "svc"})
    assert len(candidate.digest) == 64
    assert candidate.check_passed is None
    assert (repo / "app/main.py").read_text() == APP  # prepare never touches the operator's tree
    assert_untouched(repo, base)

    applied = healer.apply(ctx, candidate, base, TRAILERS)

    assert applied.commit == git(repo, "rev-parse", "HEAD")
    assert git(repo, "rev-parse", f"{applied.commit}^") == base
    assert raw_git(repo, "diff", *DIFF_OPTIONS, base, applied.commit or "") == candidate.diff
    assert git(repo, "log", "-1", "--format=%s") == "healbot: Guard empty items"
    assert "total() crashes on an empty list." in git(repo, "log", "-1", "--format=%b")
    assert git(repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>") == (
        "healbot <healbot@localhost>|healbot <healbot@localhost>"
    )
    for key, value in {**TRAILERS, "Healbot-Digest": candidate.digest}.items():
        assert trailer_value(repo, applied.commit or "", key) == value
    assert "if not items" in (repo / "app/main.py").read_text()
    assert_untouched(repo, applied.commit or "")

    revert = healer.undo(ctx, applied.commit or "", {"Healbot-Incident": "7", "Approved-By": "auto"})

    assert revert == git(repo, "rev-parse", "HEAD")
    assert git(repo, "rev-parse", f"{revert}^") == applied.commit
    assert (repo / "app/main.py").read_text() == APP
    assert trailer_value(repo, revert, "Healbot-Revert-Of") == applied.commit
    assert trailer_value(repo, revert, "Healbot-Incident") == "7"
    assert git(repo, "log", "-1", "--format=%s") == 'Revert "healbot: Guard empty items"'
    assert_untouched(repo, revert)


def test_edits_apply_in_order_and_the_repo_identity_can_be_configured(repo: Path) -> None:
    git(repo, "config", "healbot.name", "ops-bot")
    git(repo, "config", "healbot.email", "ops-bot@example.invalid")
    second = Edit(path="app/main.py", old="        return 0\n", new="        return 0.0\n")
    fee = Edit(path="app/main.py", old="amount * 0.1", new="round(amount * 0.1, 2)")
    ctx = context(repo)
    base = git(repo, "rev-parse", "HEAD")

    candidate = PatchHealer().prepare(ctx, patch_fix(GUARD, second, fee), base)
    applied = PatchHealer().apply(ctx, candidate, base, TRAILERS)

    text = (repo / "app/main.py").read_text()
    assert "        return 0.0\n" in text
    assert "round(amount * 0.1, 2)" in text
    assert git(repo, "log", "-1", "--format=%an <%ae>") == "ops-bot <ops-bot@example.invalid>"
    assert git(repo, "rev-list", "--count", f"{base}..{applied.commit}") == "1"


def test_untracked_files_elsewhere_do_not_block_and_stay_untouched(repo: Path) -> None:
    (repo / "notes.txt").write_text("operator's scratch notes\n")
    ctx = context(repo)
    base = git(repo, "rev-parse", "HEAD")
    candidate = PatchHealer().prepare(ctx, patch_fix(GUARD), base)

    PatchHealer().apply(ctx, candidate, base, TRAILERS)

    assert (repo / "notes.txt").read_text() == "operator's scratch notes\n"
    assert git(repo, "status", "--porcelain") == "?? notes.txt"


# --- bad edits: clear error, nothing changed ---------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (Edit("app/main.py", "return nothing", "x"), "edit 1 of 1: old text not found in app/main.py"),
        (Edit("app/main.py", "    return ", "    return  "), "old text occurs 2 times in app/main.py"),
        (Edit("app/main.py", "", "x"), "old text is empty"),
        (Edit("app/main.py", "amount", "amount"), "changes nothing"),
        (Edit("app/missing.py", "a", "b"), "app/missing.py is not a file"),
        (Edit("app", "a", "b"), "app is not a file"),
    ],
)
def test_bad_edit_is_a_patch_error_and_changes_nothing(repo: Path, edit: Edit, message: str) -> None:
    base = git(repo, "rev-parse", "HEAD")
    with pytest.raises(PatchError, match=re.escape(message)):
        PatchHealer().prepare(context(repo), patch_fix(edit), base)
    assert_untouched(repo, base)
    assert (repo / "app/main.py").read_text() == APP


def test_overlapping_occurrences_count_as_ambiguous(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"a.txt": "aaa\n"})
    base = git(repo, "rev-parse", "HEAD")
    with pytest.raises(PatchError, match=r"old text occurs 2 times in a\.txt"):
        PatchHealer().prepare(context(repo), patch_fix(Edit("a.txt", "aa", "b")), base)


def test_second_edit_failing_leaves_nothing_behind(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    with pytest.raises(PatchError, match="edit 2 of 2: old text not found"):
        PatchHealer().prepare(context(repo), patch_fix(GUARD, Edit("README.md", "bye", "x")), base)
    assert_untouched(repo, base)


def test_a_patch_needs_edits(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    with pytest.raises(PatchError, match="at least one edit"):
        PatchHealer().prepare(context(repo), patch_fix(), base)


def test_unknown_base_commit_is_refused(repo: Path) -> None:
    with pytest.raises(PatchError, match="does not exist"):
        PatchHealer().prepare(context(repo), patch_fix(GUARD), "0" * 40)
    with pytest.raises(GitError, match="not a commit id"):
        PatchHealer().prepare(context(repo), patch_fix(GUARD), "--output=/tmp/x")


@pytest.mark.parametrize(
    "path",
    ["../outside.py", "app/../../outside.py", "/etc/passwd", ".git/config", ".GIT/config", "app/.git/x", ""],
)
def test_path_escape_is_refused(repo: Path, path: str) -> None:
    (repo.parent / "outside.py").write_text("secret = 1\n")
    base = git(repo, "rev-parse", "HEAD")
    with pytest.raises(PathEscapeError):
        PatchHealer().prepare(context(repo), patch_fix(Edit(path, "secret = 1", "secret = 2")), base)
    assert (repo.parent / "outside.py").read_text() == "secret = 1\n"
    assert_untouched(repo, base)


@pytest.mark.parametrize(
    ("link", "edit_path"), [("hosts_link", "hosts_link"), ("etc_dir", "etc_dir/hostname")]
)
def test_symlink_out_of_the_repo_is_a_path_escape(repo: Path, link: str, edit_path: str) -> None:
    os.symlink("/etc/hosts" if link == "hosts_link" else "/etc", repo / link)
    git(repo, "add", link)
    git(repo, "commit", "-q", "-m", "add a link")
    base = git(repo, "rev-parse", "HEAD")
    with pytest.raises(PathEscapeError, match="outside the repo"):
        PatchHealer().prepare(context(repo), patch_fix(Edit(edit_path, "localhost", "evil")), base)
    assert_untouched(repo, base)


def test_symlink_inside_the_repo_edits_its_target(repo: Path) -> None:
    os.symlink("app/main.py", repo / "main_link.py")
    git(repo, "add", "main_link.py")
    git(repo, "commit", "-q", "-m", "add a link")
    base = git(repo, "rev-parse", "HEAD")
    edit = Edit("main_link.py", GUARD.old, GUARD.new)
    candidate = PatchHealer().prepare(context(repo, allowed_paths=("app/**",)), patch_fix(edit), base)
    assert candidate.diff.startswith("diff --git a/app/main.py b/app/main.py")


def test_allowed_paths_are_enforced(repo: Path) -> None:
    ctx = context(repo, allowed_paths=("app/**", "*.md"))
    base = git(repo, "rev-parse", "HEAD")
    with pytest.raises(PatchError, match=r"not in allowed_paths \(app/\*\*, \*\.md\): config/settings.ini"):
        PatchHealer().prepare(ctx, patch_fix(Edit("config/settings.ini", "false", "true")), base)
    assert_untouched(repo, base)
    readme = Edit("README.md", "hello", "hello there")
    candidate = PatchHealer().prepare(ctx, patch_fix(GUARD, readme), base)
    assert candidate.stats.files == 2


# --- the check command ------------------------------------------------------------------------------


def test_passing_check_runs_in_the_worktree_with_the_edit(repo: Path) -> None:
    script = (
        "import pathlib, sys\n"
        "text = pathlib.Path('app/main.py').read_text()\n"
        "print('checked', 'if not items' in text)\n"
        "sys.exit(0 if 'if not items' in text else 3)\n"
    )
    ctx = context(repo, check_command=(sys.executable, "-c", script))
    base = git(repo, "rev-parse", "HEAD")
    candidate = PatchHealer().prepare(ctx, patch_fix(GUARD), base)
    assert candidate.check_passed is True
    assert "checked True" in candidate.check_output
    assert_untouched(repo, base)


def test_failing_check_is_a_patch_error_with_its_output(repo: Path) -> None:
    broken = Edit("app/main.py", "def fee(amount):", "def fee(amount:")
    ctx = context(repo, check_command=(sys.executable, "-m", "py_compile", "app/main.py"))
    base = git(repo, "rev-parse", "HEAD")
    with pytest.raises(PatchError, match=r"(?s)check command .* failed \(exit 1\).*SyntaxError"):
        PatchHealer().prepare(ctx, patch_fix(broken), base)
    assert_untouched(repo, base)


def test_check_that_hangs_is_killed_and_refused(repo: Path) -> None:
    ctx = context(
        repo, check_command=(sys.executable, "-c", "import time; time.sleep(60)"), check_timeout_s=0.5
    )
    base = git(repo, "rev-parse", "HEAD")
    with pytest.raises(PatchError, match=r"timed out after 0\.5s"):
        PatchHealer().prepare(ctx, patch_fix(GUARD), base)
    assert_untouched(repo, base)


def test_missing_check_binary_is_a_patch_error(repo: Path) -> None:
    ctx = context(repo, check_command=("/nonexistent/healbot-check",))
    base = git(repo, "rev-parse", "HEAD")
    with pytest.raises(PatchError, match="could not run"):
        PatchHealer().prepare(ctx, patch_fix(GUARD), base)
    assert_untouched(repo, base)


# --- apply's guards -----------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", [False, True])
def test_dirty_tree_is_refused_and_never_stashed(repo: Path, stage: bool) -> None:
    ctx = context(repo)
    base = git(repo, "rev-parse", "HEAD")
    candidate = PatchHealer().prepare(ctx, patch_fix(GUARD), base)
    (repo / "README.md").write_text("operator's work in progress\n")
    if stage:
        git(repo, "add", "README.md")

    with pytest.raises(DirtyTreeError, match=r"uncommitted changes \(README.md\); healbot never stashes"):
        PatchHealer().apply(ctx, candidate, base, TRAILERS)

    assert (repo / "README.md").read_text() == "operator's work in progress\n"
    assert (repo / "app/main.py").read_text() == APP
    assert git(repo, "rev-parse", "HEAD") == base
    assert git(repo, "stash", "list") == ""
    assert git(repo, "status", "--porcelain") == ("M  README.md" if stage else "M README.md")


def test_merge_in_progress_is_refused(repo: Path) -> None:
    ctx = context(repo)
    base = git(repo, "rev-parse", "HEAD")
    candidate = PatchHealer().prepare(ctx, patch_fix(GUARD), base)
    (repo / ".git" / "MERGE_HEAD").write_text(base + "\n")
    with pytest.raises(DirtyTreeError, match="a merge is in progress"):
        PatchHealer().apply(ctx, candidate, base, TRAILERS)
    assert git(repo, "rev-parse", "HEAD") == base


def test_head_moved_after_prepare_is_stale_and_changes_nothing(repo: Path) -> None:
    ctx = context(repo)
    base = git(repo, "rev-parse", "HEAD")
    candidate = PatchHealer().prepare(ctx, patch_fix(GUARD), base)
    (repo / "README.md").write_text("moved on\n")
    git(repo, "commit", "-q", "-am", "operator commit")
    moved = git(repo, "rev-parse", "HEAD")

    with pytest.raises(
        StaleProposalError, match=f"the repo moved: HEAD is {moved[:7]}, the proposal was made at {base[:7]}"
    ):
        PatchHealer().apply(ctx, candidate, base, TRAILERS)

    assert_untouched(repo, moved)
    assert (repo / "app/main.py").read_text() == APP


def test_tampered_diff_or_digest_is_stale(repo: Path) -> None:
    ctx = context(repo)
    base = git(repo, "rev-parse", "HEAD")
    candidate = PatchHealer().prepare(ctx, patch_fix(GUARD), base)
    tampered_diff = Candidate(
        candidate.fix, candidate.diff.replace("return 0", "return 1"), candidate.digest, candidate.stats
    )
    tampered_digest = Candidate(candidate.fix, candidate.diff, "0" * 64, candidate.stats)
    other_service = HealContext(service="other", repo=str(repo))

    for bad_ctx, bad in ((ctx, tampered_diff), (ctx, tampered_digest), (other_service, candidate)):
        with pytest.raises(StaleProposalError, match="digest"):
            PatchHealer().apply(bad_ctx, bad, base, TRAILERS)
        assert_untouched(repo, base)
    assert (repo / "app/main.py").read_text() == APP


def test_bad_trailer_key_is_refused_before_anything_changes(repo: Path) -> None:
    ctx = context(repo)
    base = git(repo, "rev-parse", "HEAD")
    candidate = PatchHealer().prepare(ctx, patch_fix(GUARD), base)
    with pytest.raises(HealerError, match="invalid trailer key"):
        PatchHealer().apply(ctx, candidate, base, {"Bad Key:": "x"})
    assert_untouched(repo, base)


def test_commit_failure_restores_exactly_the_touched_paths(repo: Path) -> None:
    ctx = context(repo)
    base = git(repo, "rev-parse", "HEAD")
    candidate = PatchHealer().prepare(ctx, patch_fix(GUARD), base)
    (repo / "scratch.txt").write_text("untracked, not ours\n")
    git(repo, "config", "healbot.name", ".")  # git refuses this identity, so the commit fails

    with pytest.raises(GitError, match="git commit"):
        PatchHealer().apply(ctx, candidate, base, TRAILERS)

    assert_untouched(repo, base)
    assert (repo / "app/main.py").read_text() == APP
    assert (repo / "scratch.txt").read_text() == "untracked, not ours\n"


def test_wrong_kind_is_refused(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    restart = Fix(rank=1, title="restart", rationale="", risk=Risk.LOW, kind=FixKind.RESTART)
    with pytest.raises(HealerError, match="cannot prepare a restart fix"):
        PatchHealer().prepare(context(repo), restart, base)


# --- concurrency ----------------------------------------------------------------------------------------


def test_concurrent_applies_on_one_repo_are_serialised(repo: Path) -> None:
    ctx = context(repo)
    base = git(repo, "rev-parse", "HEAD")
    first = PatchHealer().prepare(ctx, patch_fix(GUARD), base)
    second = PatchHealer().prepare(ctx, patch_fix(Edit("README.md", "hello", "hi"), title="Say hi"), base)
    outcomes: list[object] = []
    barrier = threading.Barrier(2)

    def run(candidate: Candidate) -> None:
        barrier.wait()
        try:
            outcomes.append(PatchHealer().apply(ctx, candidate, base, TRAILERS))
        except StaleProposalError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(outcomes) == 2
    assert sum(isinstance(o, StaleProposalError) for o in outcomes) == 1
    assert git(repo, "rev-list", "--count", f"{base}..HEAD") == "1"
    assert git(repo, "status", "--porcelain") == ""


def test_apply_waits_for_the_lock_held_by_another_process(repo: Path) -> None:
    ctx = context(repo)
    base = git(repo, "rev-parse", "HEAD")
    candidate = PatchHealer().prepare(ctx, patch_fix(GUARD), base)
    holder = hold_flock(repo / ".git" / APPLY_LOCK_NAME)
    try:
        results: list[object] = []
        worker = threading.Thread(
            target=lambda: results.append(PatchHealer().apply(ctx, candidate, base, TRAILERS))
        )
        worker.start()
        worker.join(timeout=0.5)
        assert worker.is_alive(), "apply must wait while another process holds the lock"
        assert git(repo, "rev-parse", "HEAD") == base

        assert holder.stdin is not None
        holder.stdin.close()
        worker.join(timeout=30)
        assert not worker.is_alive()
        assert len(results) == 1
        assert git(repo, "rev-parse", "HEAD") != base
    finally:
        release(holder)


def test_lock_timeout_is_a_git_error(repo: Path) -> None:
    ctx = context(repo)
    base = git(repo, "rev-parse", "HEAD")
    candidate = PatchHealer().prepare(ctx, patch_fix(GUARD), base)
    holder = hold_flock(repo / ".git" / APPLY_LOCK_NAME)
    try:
        with pytest.raises(GitError, match="another process holds"):
            PatchHealer(lock_timeout_s=0.3).apply(ctx, candidate, base, TRAILERS)
        assert_untouched(repo, base)
    finally:
        release(holder)


# --- undo -------------------------------------------------------------------------------------------------


def test_conflicting_revert_is_aborted_cleanly(repo: Path) -> None:
    ctx = context(repo)
    base = git(repo, "rev-parse", "HEAD")
    candidate = PatchHealer().prepare(ctx, patch_fix(GUARD), base)
    applied = PatchHealer().apply(ctx, candidate, base, TRAILERS)
    text = (repo / "app/main.py").read_text().replace("return 0\n", "return None\n")
    (repo / "app/main.py").write_text(text)
    git(repo, "commit", "-q", "-am", "operator builds on the fix")
    head = git(repo, "rev-parse", "HEAD")

    with pytest.raises(GitError, match="conflicts with later changes; aborted"):
        PatchHealer().undo(ctx, applied.commit or "", {})

    assert_untouched(repo, head)
    assert (repo / "app/main.py").read_text() == text
    assert not (repo / ".git" / "REVERT_HEAD").exists()


def test_undo_refuses_a_dirty_tree_and_unknown_commits(repo: Path) -> None:
    ctx = context(repo)
    base = git(repo, "rev-parse", "HEAD")
    applied = PatchHealer().apply(ctx, PatchHealer().prepare(ctx, patch_fix(GUARD), base), base, TRAILERS)
    (repo / "README.md").write_text("wip\n")
    with pytest.raises(DirtyTreeError, match=r"README\.md"):
        PatchHealer().undo(ctx, applied.commit or "", {})
    assert (repo / "README.md").read_text() == "wip\n"
    git(repo, "checkout", "README.md")
    with pytest.raises(GitError, match="does not exist"):
        PatchHealer().undo(ctx, "f" * 40, {})
    with pytest.raises(GitError, match="not a commit id"):
        PatchHealer().undo(ctx, "HEAD~1", {})
    assert git(repo, "rev-parse", "HEAD") == applied.commit
    assert git(repo, "stash", "list") == ""


def test_undo_twice_says_nothing_to_revert(repo: Path) -> None:
    ctx = context(repo)
    base = git(repo, "rev-parse", "HEAD")
    applied = PatchHealer().apply(ctx, PatchHealer().prepare(ctx, patch_fix(GUARD), base), base, TRAILERS)
    PatchHealer().undo(ctx, applied.commit or "", {})
    head = git(repo, "rev-parse", "HEAD")
    with pytest.raises(GitError, match="changes nothing"):
        PatchHealer().undo(ctx, applied.commit or "", {})
    assert_untouched(repo, head)


# --- RevertCommitHealer ---------------------------------------------------------------------------------


def revert_fix(commit: str) -> Fix:
    return Fix(
        rank=1,
        title="Revert the fee change",
        rationale="The errors started with this commit.",
        risk=Risk.MEDIUM,
        kind=FixKind.REVERT_COMMIT,
        commit=commit,
    )


def commit_change(repo: Path, path: str, text: str, message: str) -> str:
    (repo / path).write_text(text)
    git(repo, "add", path)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def test_revert_commit_prepare_apply_undo(repo: Path) -> None:
    bad = commit_change(repo, "app/main.py", APP.replace("0.1", "1.0"), "raise the fee")
    commit_change(repo, "README.md", "later work\n", "unrelated later commit")
    ctx = context(repo)
    base = git(repo, "rev-parse", "HEAD")
    healer = RevertCommitHealer()

    candidate = healer.prepare(ctx, revert_fix(bad[:10]), base)

    assert "-    return amount * 1.0\n+    return amount * 0.1\n" in candidate.diff
    assert candidate.stats.files == 1
    assert_untouched(repo, base)

    applied = healer.apply(ctx, candidate, base, TRAILERS)

    assert (repo / "app/main.py").read_text() == APP
    assert (repo / "README.md").read_text() == "later work\n"
    assert git(repo, "log", "-1", "--format=%s") == "healbot: Revert the fee change"
    assert f"This reverts commit {bad[:10]}." in git(repo, "log", "-1", "--format=%b")
    assert trailer_value(repo, applied.commit or "", "Healbot-Digest") == candidate.digest

    healer.undo(ctx, applied.commit or "", {})
    assert "1.0" in (repo / "app/main.py").read_text()
    assert_untouched(repo, git(repo, "rev-parse", "HEAD"))


def test_revert_commit_refusals(repo: Path) -> None:
    ctx = context(repo)
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "side")
    side = commit_change(repo, "README.md", "side\n", "side branch")
    git(repo, "checkout", "-q", "main")
    healer = RevertCommitHealer()

    with pytest.raises(PatchError, match="is not in the history of"):
        healer.prepare(ctx, revert_fix(side), base)
    with pytest.raises(PatchError, match="does not exist"):
        healer.prepare(ctx, revert_fix("abcdef1234"), base)
    with pytest.raises(PatchError, match="must name the commit"):
        healer.prepare(ctx, revert_fix(""), base)
    with pytest.raises(GitError, match="not a commit id"):
        healer.prepare(ctx, revert_fix("main~1"), base)
    assert_untouched(repo, base)


def test_revert_commit_conflicting_at_base_is_a_patch_error(repo: Path) -> None:
    bad = commit_change(repo, "app/main.py", APP.replace("0.1", "1.0"), "raise the fee")
    commit_change(repo, "app/main.py", APP.replace("0.1", "2.0"), "raise it again")
    base = git(repo, "rev-parse", "HEAD")
    with pytest.raises(PatchError, match="conflicts with later changes"):
        RevertCommitHealer().prepare(context(repo), revert_fix(bad), base)
    assert_untouched(repo, base)


def test_revert_commit_respects_allowed_paths(repo: Path) -> None:
    bad = commit_change(repo, "config/settings.ini", "debug = true\n", "debug on")
    base = git(repo, "rev-parse", "HEAD")
    with pytest.raises(PatchError, match="not in allowed_paths"):
        RevertCommitHealer().prepare(context(repo, allowed_paths=("app/**",)), revert_fix(bad), base)
    assert_untouched(repo, base)


def test_revert_that_recreates_a_file_refuses_an_untracked_file_there(repo: Path) -> None:
    git(repo, "rm", "-q", "config/settings.ini")
    git(repo, "commit", "-q", "-m", "drop settings")
    bad = git(repo, "rev-parse", "HEAD")
    ctx = context(repo)
    candidate = RevertCommitHealer().prepare(ctx, revert_fix(bad), bad)
    (repo / "config").mkdir(exist_ok=True)
    (repo / "config/settings.ini").write_text("operator's own settings\n")

    with pytest.raises(DirtyTreeError, match=r"config/settings\.ini"):
        RevertCommitHealer().apply(ctx, candidate, bad, TRAILERS)

    assert (repo / "config/settings.ini").read_text() == "operator's own settings\n"
    assert git(repo, "rev-parse", "HEAD") == bad
    (repo / "config/settings.ini").unlink()
    RevertCommitHealer().apply(ctx, candidate, bad, TRAILERS)
    assert (repo / "config/settings.ini").read_text() == "debug = false\n"
    wait_until(lambda: git(repo, "status", "--porcelain") == "", what="a clean tree")


# --- the shared helpers of healers/base.py ---------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["", " ", "/abs", "~/x", "a/../b", "..", ".git", ".git/HEAD", "sub/.Git/config", "a\\b", "a\x00b", "."],
)
def test_check_relative_path_refuses(path: str) -> None:
    with pytest.raises(PathEscapeError):
        check_relative_path(path)


def test_check_relative_path_accepts_plain_paths() -> None:
    assert check_relative_path("app/main.py").as_posix() == "app/main.py"
    assert check_relative_path("./app/.gitignore").as_posix() == "app/.gitignore"


def test_edit_outside_allowed_paths_names_the_written_path(repo: Path) -> None:
    os.symlink("config/settings.ini", repo / "settings_link")
    git(repo, "add", "settings_link")
    git(repo, "commit", "-q", "-m", "link")
    base = git(repo, "rev-parse", "HEAD")
    edit = Edit("settings_link", "false", "true")
    with pytest.raises(
        PatchError, match=r"not in allowed_paths \(app/\*\*\): settings_link \(-> config/settings"
    ):
        PatchHealer().prepare(context(repo, allowed_paths=("app/**",)), patch_fix(edit), base)


@pytest.mark.parametrize(
    ("pattern", "path", "allowed"),
    [
        ("app/**", "app/main.py", True),
        ("app/**", "app/sub/deep.py", True),
        ("app/", "app/sub/deep.py", True),
        ("app/*.py", "app/main.py", True),
        ("app/*.py", "app/sub/deep.py", False),
        ("**/*.py", "main.py", True),
        ("**/*.py", "a/b/main.py", True),
        ("*.md", "README.md", True),
        ("*.md", "docs/README.md", False),
        ("app/**", "application/x.py", False),
        ("app/?.py", "app/a.py", True),
    ],
)
def test_allowed_path_globs(pattern: str, path: str, allowed: bool) -> None:
    assert path_allowed(path, (pattern,)) is allowed
    assert path_allowed(path, ())


def test_digest_is_canonical_and_covers_every_part() -> None:
    digest = compute_digest("diff", "a" * 40, FixKind.PATCH, {"service": "svc", "x": "1"})
    assert digest == compute_digest("diff", "a" * 40, FixKind.PATCH, {"x": "1", "service": "svc"})
    others = {
        compute_digest("diff2", "a" * 40, FixKind.PATCH, {"service": "svc", "x": "1"}),
        compute_digest("diff", "b" * 40, FixKind.PATCH, {"service": "svc", "x": "1"}),
        compute_digest("diff", "a" * 40, FixKind.REVERT_COMMIT, {"service": "svc", "x": "1"}),
        compute_digest("diff", "a" * 40, FixKind.PATCH, {"service": "svc", "x": "2"}),
        compute_digest("diff", "a" * 40, FixKind.PATCH, {"service": "svc"}),
    }
    assert digest not in others
    assert len(others) == 5


def test_run_command_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    result = run_command([sys.executable, "-c", code], cwd=tmp_path, timeout_s=1.0)
    assert result.timed_out
    assert result.returncode is None
    grandchild = int(pid_file.read_text())

    def gone() -> bool:
        try:
            return psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_until(gone, timeout=5, what="the grandchild to be killed with its group")


def test_run_command_missing_binary_is_a_healer_error(tmp_path: Path) -> None:
    with pytest.raises(HealerError, match="command not found"):
        run_command(["/nonexistent/tool"], cwd=tmp_path, timeout_s=5)
