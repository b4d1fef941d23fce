"""The git operations the healers need, through the git CLI (argv lists, explicit env, no prompts).

Commit identity: healbot's commits are authored and committed by `healbot <healbot@localhost>` (the
person who approved is the `Approved-By` trailer). A repo may name the bot differently with
`git config healbot.name` / `git config healbot.email`; the operator's own `user.name` is never used,
so a bot commit is never mistaken for a human's.

Every command runs with hooks disabled (`core.hooksPath=/dev/null`) and signing off: a hook or a
`whitespace=fix` setting could otherwise change what is committed after the operator approved the diff.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from bot.errors import DirtyTreeError, GitError, HealerError, StaleProposalError
from healers import git_landing
from healers.base import CommandResult, output_tail, run_command

BOT_NAME = "healbot"
BOT_EMAIL = "healbot@localhost"
APPLY_LOCK_NAME = "healbot-apply.lock"
GIT_TIMEOUT_S = 120.0
DEFAULT_LOCK_TIMEOUT_S = 300.0
DIFF_OPTIONS = (
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--no-renames",
    "--binary",
    "--src-prefix=a/",
    "--dst-prefix=b/",
)
_GIT_CONFIG = (
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "commit.gpgsign=false",
    "-c",
    "diff.noprefix=false",
    "-c",
    "diff.mnemonicPrefix=false",
    "-c",
    "advice.detachedHead=false",
)
# Variables that would point git at another repository, index or identity than the one we name.
_GIT_ENV_DROPPED = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
    "GIT_AUTHOR_NAME",
    "GIT_AUTHOR_EMAIL",
    "GIT_AUTHOR_DATE",
    "GIT_COMMITTER_NAME",
    "GIT_COMMITTER_EMAIL",
    "GIT_COMMITTER_DATE",
    "GIT_EDITOR",
    "GIT_SEQUENCE_EDITOR",
)
_OPERATION_MARKERS = {
    "MERGE_HEAD": "a merge",
    "REVERT_HEAD": "a revert",
    "CHERRY_PICK_HEAD": "a cherry-pick",
    "rebase-merge": "a rebase",
    "rebase-apply": "a rebase or am",
    "BISECT_LOG": "a bisect",
}
_SHA_PATTERN = re.compile(r"[0-9a-fA-F]{4,64}")
_TRAILER_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_MAX_NAMED_FILES = 10

logger = logging.getLogger(__name__)

_thread_locks: dict[Path, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def git_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _GIT_ENV_DROPPED}
    env.update({"GIT_TERMINAL_PROMPT": "0", "GIT_EDITOR": "true", "LC_ALL": "C", "GIT_PAGER": "cat"})
    return env


def short(sha: str) -> str:
    return sha[:7]


def check_sha(rev: str) -> str:
    """A commit id from outside (LLM, store) must be plain hex, never a ref name or an option."""
    if not _SHA_PATTERN.fullmatch(rev):
        raise GitError(f"not a commit id: {rev!r}")
    return rev.lower()


def one_line(text: str) -> str:
    return " ".join(text.split())


def commit_message(subject: str, body: str, trailers: Mapping[str, str]) -> str:
    """Subject, a short body, then one trailer block; keys checked, values on one line."""
    lines = [one_line(subject) or "healbot change", ""]
    if body.strip():
        lines += [body.strip(), ""]
    for key, value in trailers.items():
        if not _TRAILER_KEY.fullmatch(key):
            raise HealerError(f"invalid trailer key {key!r}: letters, digits and '-' only")
        lines.append(f"{key}: {one_line(value)}")
    return "\n".join(lines).rstrip("\n") + "\n"


def first_lines(text: str, max_lines: int = 6, max_chars: int = 600) -> str:
    kept = [line.rstrip() for line in text.strip().splitlines()[:max_lines]]
    return "\n".join(kept)[:max_chars]


class GitRepo:
    """One working tree (the top of a repository), driven through the git CLI."""

    def __init__(self, root: Path | str, *, timeout_s: float = GIT_TIMEOUT_S) -> None:
        path = Path(root)
        if not path.is_dir():
            raise GitError(f"repo {root} is not a directory")
        self.root = path.resolve()
        self.timeout_s = timeout_s
        top = self.out("rev-parse", "--show-toplevel")
        if Path(top).resolve() != self.root:
            raise GitError(f"{root} is not the top of a git repository (the top is {top})")

    # --- running git ------------------------------------------------------------------------------

    def run(
        self,
        *args: str,
        cwd: Path | None = None,
        input_bytes: bytes | None = None,
        extra_env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> CommandResult:
        env = git_env()
        if extra_env:
            env.update(extra_env)
        argv = ("git", *_GIT_CONFIG, *args)
        result = run_command(
            argv, cwd=cwd or self.root, timeout_s=self.timeout_s, env=env, input_bytes=input_bytes
        )
        if check and not result.ok:
            what = "timed out" if result.timed_out else f"exit {result.returncode}"
            raise GitError(
                f"git {' '.join(args[:3])} failed ({what}) in {cwd or self.root}: "
                f"{output_tail(result.output, 10, 1500)}"
            )
        return result

    def out(self, *args: str, cwd: Path | None = None, input_bytes: bytes | None = None) -> str:
        result = self.run(*args, cwd=cwd, input_bytes=input_bytes)
        return result.stdout.decode("utf-8", errors="replace").strip()

    # --- reading ----------------------------------------------------------------------------------

    def resolve_commit(self, rev: str, *, cwd: Path | None = None) -> str | None:
        if rev.startswith("-"):
            raise GitError(f"not a revision: {rev!r}")
        result = self.run("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", cwd=cwd, check=False)
        if not result.ok:
            return None
        return result.stdout.decode().strip()

    def head(self) -> str:
        sha = self.resolve_commit("HEAD")
        if sha is None:
            raise GitError(f"{self.root} has no commits (HEAD does not resolve)")
        return sha

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        result = self.run("merge-base", "--is-ancestor", ancestor, descendant, check=False)
        if result.returncode not in (0, 1):
            raise GitError(f"git merge-base failed: {output_tail(result.output, 5, 500)}")
        return result.returncode == 0

    def parents(self, sha: str) -> list[str]:
        return self.out("rev-list", "--parents", "-n", "1", sha).split()[1:]

    def subject(self, sha: str) -> str:
        return self.out("log", "-1", "--format=%s", sha)

    def git_dir(self) -> Path:
        return Path(self.out("rev-parse", "--absolute-git-dir"))

    def common_dir(self) -> Path:
        path = Path(self.out("rev-parse", "--git-common-dir"))
        return path if path.is_absolute() else (self.root / path).resolve()

    def status(self) -> list[tuple[str, str]]:
        """(XY, path) for every changed, staged, unmerged or untracked path (ignored files excluded)."""
        raw = self.run("status", "--porcelain=v1", "-z", "--untracked-files=all").stdout
        fields = raw.decode("utf-8", errors="surrogateescape").split("\0")
        entries: list[tuple[str, str]] = []
        i = 0
        while i < len(fields):
            field = fields[i]
            i += 1
            if len(field) < 4:
                continue
            code, path = field[:2], field[3:]
            entries.append((code, path))
            if "R" in code or "C" in code:  # the next field is the original path
                entries.append((code, fields[i]))
                i += 1
        return entries

    def touched_by_commit(self, sha: str) -> list[str]:
        raw = self.run(
            "diff-tree", "--root", "--no-commit-id", "--no-renames", "-r", "-z", "--name-only", sha
        ).stdout
        return [p for p in raw.decode("utf-8", errors="surrogateescape").split("\0") if p]

    def numstat(self, diff: str) -> list[tuple[int, int, str]]:
        """(added, removed, path) for every path a unified diff touches, as git itself parses it."""
        if not diff.strip():
            raise HealerError("the diff is empty")
        raw = self.run("apply", "--numstat", "-z", input_bytes=diff.encode("utf-8")).stdout
        fields = raw.decode("utf-8", errors="surrogateescape").split("\0")
        rows: list[tuple[int, int, str]] = []
        i = 0
        while i < len(fields):
            parts = fields[i].split("\t", 2)
            i += 1
            if len(parts) != 3:
                continue
            added, removed = (int(n) if n.isdigit() else 0 for n in parts[:2])
            if parts[2]:
                rows.append((added, removed, parts[2]))
            else:  # a rename/copy: the two paths follow as their own fields
                rows += [(added, removed, p) for p in fields[i : i + 2] if p]
                i += 2
        return rows

    def paths_in_diff(self, diff: str) -> list[str]:
        return [path for _, _, path in self.numstat(diff)]

    # --- guarding ---------------------------------------------------------------------------------

    def ensure_clean(self, touched: Sequence[str]) -> None:
        """Refuse operator work in progress: tracked changes anywhere, untracked files where we write."""
        self.ensure_no_operation()
        touched_set = set(touched)
        dirty = sorted(
            {
                path
                for code, path in self.status()
                if code != "??" or path in touched_set or any(path.startswith(t + "/") for t in touched_set)
            }
        )
        if dirty:
            named = ", ".join(dirty[:_MAX_NAMED_FILES]) + (" …" if len(dirty) > _MAX_NAMED_FILES else "")
            raise DirtyTreeError(
                f"{self.root} has uncommitted changes ({named}); healbot never stashes: "
                "commit or discard them, then approve again"
            )

    def ensure_no_operation(self) -> None:
        """Refuse while the operator is in the middle of a merge, revert, rebase, … of their own."""
        git_dir = self.git_dir()
        for marker, what in _OPERATION_MARKERS.items():
            if (git_dir / marker).exists():
                raise DirtyTreeError(f"{self.root}: {what} is in progress; finish or abort it first")

    @contextmanager
    def lock(self, timeout_s: float) -> Iterator[None]:
        """One apply at a time per repo: a thread lock in this process and a lock file for the rest."""
        with _thread_locks_guard:
            thread_lock = _thread_locks.setdefault(self.root, threading.Lock())
        if not thread_lock.acquire(timeout=timeout_s):
            raise GitError(f"another healbot change is running on {self.root} (waited {timeout_s:g}s)")
        try:
            fd = os.open(self.common_dir() / APPLY_LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                deadline = time.monotonic() + timeout_s
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise GitError(
                                f"another process holds {APPLY_LOCK_NAME} of {self.root} (waited {timeout_s:g}s)"
                            ) from None
                        time.sleep(0.05)
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        finally:
            thread_lock.release()

    # --- scratch worktrees ------------------------------------------------------------------------

    @contextmanager
    def worktree(self, commit: str) -> Iterator[Path]:
        """A detached scratch worktree at `commit`, outside the operator's tree; always removed."""
        parent = Path(tempfile.mkdtemp(prefix="healbot-wt-"))
        path = parent / "tree"
        try:
            self.run("worktree", "add", "--detach", "--quiet", str(path), commit)
            yield path
        finally:
            self.run("worktree", "remove", "--force", "--force", str(path), check=False)
            shutil.rmtree(parent, ignore_errors=True)
            self.run("worktree", "prune", check=False)

    def diff(self, worktree: Path, *, cached: bool = False) -> str:
        args = ["diff", *DIFF_OPTIONS]
        if cached:
            args.append("--cached")
        raw = self.run(*args, cwd=worktree).stdout
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HealerError(
                "the change is not valid UTF-8 text; healbot cannot show it for approval"
            ) from exc

    # --- writing ----------------------------------------------------------------------------------

    def identity_env(self) -> dict[str, str]:
        name = self.run("config", "--get", "healbot.name", check=False).stdout.decode().strip() or BOT_NAME
        email = self.run("config", "--get", "healbot.email", check=False).stdout.decode().strip() or BOT_EMAIL
        return {
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
        }

    def index_path(self) -> Path:
        path = Path(self.out("rev-parse", "--git-path", "index"))
        return path if path.is_absolute() else (self.root / path).resolve()

    def head_ref_lock(self) -> Path:
        """The lock file `git update-ref HEAD` takes: the checked-out branch's, or HEAD's when detached."""
        ref = self.run("symbolic-ref", "-q", "HEAD", check=False).stdout.decode().strip()
        if ref:
            return self.common_dir() / f"{ref}.lock"
        return self.git_dir() / "HEAD.lock"

    def tree_entries(self, commit: str, paths: Sequence[str]) -> dict[str, tuple[str, str]]:
        """path -> (mode, blob sha) in `commit`, for those of `paths` it holds."""
        raw = self.run(
            "ls-tree", "-z", "--full-tree", commit, "--", *(f":(literal){p}" for p in paths)
        ).stdout
        return _entries(raw)

    def index_entries(self, paths: Sequence[str]) -> dict[str, tuple[str, str]]:
        """path -> (mode, blob sha) in the operator's index (a conflicted path shows its last stage)."""
        raw = self.run("ls-files", "-z", "--stage", "--", *(f":(literal){p}" for p in paths)).stdout
        return _entries(raw)

    @contextmanager
    def temporary_index(self, commit: str) -> Iterator[dict[str, str]]:
        """An index of its own, loaded with `commit`, never the operator's: the env that selects it."""
        parent = Path(tempfile.mkdtemp(prefix="healbot-index-"))
        env = {"GIT_INDEX_FILE": str(parent / "index")}
        try:
            self.run("read-tree", commit, extra_env=env)
            yield env
        finally:
            shutil.rmtree(parent, ignore_errors=True)

    def commit_tree(self, tree: str, parent: str, message: str) -> str:
        """A commit object for `tree` on `parent` by the bot identity; no ref, index or config is written."""
        result = self.run(
            "commit-tree",
            tree,
            "-p",
            parent,
            "-F",
            "-",
            input_bytes=message.encode("utf-8"),
            extra_env=self.identity_env(),
        )
        return result.stdout.decode().strip()

    def plan_apply(self, diff: str, base_commit: str, message: str) -> str:
        """The commit of exactly `diff` on `base_commit`, built out of sight (a temporary index): the
        operator's index, work tree and refs are untouched until `land`. Caller holds the lock."""
        head = self.head()
        if head != base_commit:
            raise stale_head(head, base_commit)
        touched = self.paths_in_diff(diff)
        self.ensure_clean(touched)
        with self.temporary_index(base_commit) as env:
            applied = self.run(
                "apply",
                "--cached",
                "--whitespace=nowarn",
                input_bytes=diff.encode("utf-8"),
                extra_env=env,
                check=False,
            )
            if not applied.ok:
                raise GitError(
                    f"the approved diff no longer applies: {output_tail(applied.output, 10, 1500)}"
                )
            tree = self.run("write-tree", extra_env=env).stdout.decode().strip()
        return self.commit_tree(tree, base_commit, message)

    def plan_revert(self, commit: str, trailers: Mapping[str, str]) -> str:
        """The commit that undoes exactly `commit` on HEAD (its reverse diff, three-way where later
        changes moved the lines), built out of sight like `plan_apply`. Caller holds the lock."""
        sha = self.resolve_commit(check_sha(commit))
        if sha is None:
            raise GitError(f"commit {commit} does not exist in {self.root}")
        head = self.head()
        if not self.is_ancestor(sha, head):
            raise GitError(f"commit {short(sha)} is not in the history of HEAD ({short(head)})")
        if len(self.parents(sha)) > 1:
            raise GitError(f"commit {short(sha)} is a merge; healbot does not revert merges")
        self.ensure_clean(self.touched_by_commit(sha))
        patch = self.run("diff-tree", "--root", "-p", *DIFF_OPTIONS, sha).stdout
        if not patch.strip():
            raise GitError(f"reverting {short(sha)} changes nothing (it changed nothing)")
        with self.temporary_index(head) as env:
            result = self.run(
                "apply",
                "--cached",
                "--reverse",
                "--3way",
                "--whitespace=nowarn",
                input_bytes=patch,
                extra_env=env,
                check=False,
            )
            if not result.ok:
                raise GitError(
                    f"reverting {short(sha)} conflicts with later changes; aborted, the tree is as it was: "
                    f"{output_tail(result.output, 10, 1500)}"
                )
            tree = self.run("write-tree", extra_env=env).stdout.decode().strip()
        if tree == self.out("rev-parse", f"{head}^{{tree}}"):
            raise GitError(f"reverting {short(sha)} changes nothing (already reverted?)")
        message = commit_message(
            f'Revert "{self.subject(sha)}"',
            f"This reverts commit {sha}.",
            {"Healbot-Revert-Of": sha, **{k: v for k, v in trailers.items() if k != "Healbot-Revert-Of"}},
        )
        return self.commit_tree(tree, head, message)

    def land(self, commit: str, checkpoint: Callable[[str], None] | None = None) -> str:
        """Make a commit from `plan_apply`/`plan_revert` the checked-out state, ref last; also finishes
        one a kill interrupted (see healers.git_landing). Caller holds the lock."""
        return git_landing.land(self, check_sha(commit), checkpoint)

    def apply_and_commit(self, diff: str, base_commit: str, message: str) -> str:
        """Apply exactly `diff` on a clean tree at `base_commit` as one commit; caller holds the lock."""
        return self.land(self.plan_apply(diff, base_commit, message))

    def revert(self, commit: str, trailers: Mapping[str, str]) -> str:
        """Revert exactly `commit` as one new commit carrying `trailers`; a conflict changes nothing."""
        return self.land(self.plan_revert(commit, trailers))


def _entries(raw: bytes) -> dict[str, tuple[str, str]]:
    """`ls-tree -z` ("mode type sha<TAB>path") or `ls-files -z --stage` ("mode sha stage<TAB>path")
    records as path -> (mode, sha)."""
    found: dict[str, tuple[str, str]] = {}
    for record in raw.decode("utf-8", errors="surrogateescape").split("\0"):
        meta, tab, path = record.partition("\t")
        parts = meta.split()
        if not tab or len(parts) < 3:
            continue
        sha = parts[2] if parts[1] in ("blob", "tree", "commit") else parts[1]
        found[path] = (parts[0], sha)
    return found


def stale_head(head: str, base_commit: str) -> StaleProposalError:
    return StaleProposalError(
        f"the repo moved: HEAD is {short(head)}, the proposal was made at {short(base_commit)}"
    )
