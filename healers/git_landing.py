"""Landing a commit healbot built: the operator's work tree and index for exactly the paths it touches,
then the branch moved LAST with a compare-and-swap.

A commit is built first out of sight (a temporary index, `commit-tree`); its id is recorded by the caller;
then `land` makes it visible. Each step is one that a kill -9 can interrupt, so `land` is also the way to
finish one: it accepts a tree where every touched path is at the base or already at the new commit, and
refuses (touching nothing) when a path holds anything else, which only someone else can have written.

What a kill can leave, and how each is recognised as healbot's own (never guessed):
- a file half-written: never, files are written to `.<name>.healbot-<sha12>.tmp` and renamed into place;
  a left-over temporary file has that exact name and is removed;
- the index: the new index is built in `healbot-index-<sha12>` beside it and hard-linked to `index.lock`
  (which takes git's lock atomically), then renamed over the index; an `index.lock` that is the same file
  as our staged index is ours and is removed; any other `index.lock` is reported, never removed;
- the ref: `git update-ref` writes `<ref>.lock` holding the new id; a lock holding exactly our id is ours.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bot.errors import DirtyTreeError, GitError, StaleProposalError

if TYPE_CHECKING:
    from healers.git_repo import GitRepo

Checkpoint = Callable[[str], None]
Entry = tuple[str, str]  # (mode, blob sha) as git stores it
WORKTREE_UPDATED = "worktree_updated"
INDEX_UPDATED = "index_updated"
_NULL_SHA = "0" * 40
_EXEC_MODE = "100755"
_LINK_MODE = "120000"


def land(repo: GitRepo, new: str, checkpoint: Checkpoint | None = None) -> str:
    """Make commit `new` (one parent: the base) the checked-out state: finish a half-done landing, or
    do it from the start. Returns `new`; raises DirtyTreeError/GitError with nothing touched otherwise."""
    parents = repo.parents(new)
    if len(parents) != 1:
        raise GitError(f"commit {new[:7]} has {len(parents)} parents; healbot lands only its own commits")
    base = parents[0]
    paths = repo.touched_by_commit(new)
    _remove_own_leftovers(repo, new, paths)
    head = repo.head()
    if head == new:
        return new  # the ref moves last: index and work tree were done before it
    if head != base:
        raise StaleProposalError(
            f"the repo moved: HEAD is {head[:7]}, healbot's commit {new[:7]} was built on {base[:7]}"
        )
    repo.ensure_no_operation()
    before, after = repo.tree_entries(base, paths), repo.tree_entries(new, paths)
    index = repo.index_entries(paths)
    tree = {p: worktree_entry(repo, p) for p in paths}
    foreign = [
        p
        for p in paths
        if index.get(p) not in (before.get(p), after.get(p)) or tree[p] not in (before.get(p), after.get(p))
    ]
    others = [p for code, p in repo.status() if p not in paths and code != "??"]
    if foreign or others:
        named = ", ".join(sorted(foreign + others)[:10])
        raise DirtyTreeError(
            f"{repo.root}: {named} changed outside healbot while it was landing {new[:7]}; "
            "nothing was touched: look at the repo, then revert or re-apply by hand"
        )
    index_file = repo.index_path()
    staged = _staged_index(index_file, new)
    lock = index_file.with_name(index_file.name + ".lock")
    if lock.exists():
        raise GitError(
            f"{lock} exists: another git command is running (or crashed); nothing was touched; "
            "remove the lock if no git command runs, then try again"
        )
    original = index_file.read_bytes() if index_file.exists() else b""
    _build_index(repo, staged, original, after, paths)
    written: list[str] = []
    try:
        for path in paths:
            if tree[path] != after.get(path):
                write_path(repo, path, after.get(path), new)
                written.append(path)
        if checkpoint:
            checkpoint(WORKTREE_UPDATED)
        _swap_index(index_file, staged, lock, original)
        if checkpoint:
            checkpoint(INDEX_UPDATED)
        repo.run("update-ref", "-m", f"healbot: commit {new[:12]}", "HEAD", new, base)
    except BaseException:
        _undo_landing(repo, new, base, paths, written, before, after, index_file, original)
        raise
    finally:
        staged.unlink(missing_ok=True)
    return new


def worktree_entry(repo: GitRepo, path: str) -> Entry | None:
    """What the work tree holds at `path`, as the tree entry it would be (clean filters applied)."""
    target = repo.root / path
    if target.is_symlink():
        link = os.readlink(target).encode("utf-8", errors="surrogateescape")
        return _LINK_MODE, repo.out("hash-object", "--no-filters", "--stdin", input_bytes=link)
    if not target.exists():
        return None
    if not target.is_file():
        return "040000", ""  # a directory where a file belongs: never equal to a file's entry
    mode = _EXEC_MODE if os.access(target, os.X_OK) else "100644"
    return mode, repo.out("hash-object", f"--path={path}", "--", path)


def write_path(repo: GitRepo, path: str, entry: Entry | None, new: str) -> None:
    """Put `entry` (None: no file) at `path` in the work tree; a file is never seen half-written."""
    target = repo.root / path
    if entry is None:
        if target.is_symlink() or target.is_file():
            target.unlink()
        _prune_empty_dirs(repo.root, target.parent)
        return
    mode, sha = entry
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temp_name(target, new)
    temporary.unlink(missing_ok=True)
    if mode == _LINK_MODE:
        link = repo.run("cat-file", "blob", sha).stdout
        os.symlink(os.fsdecode(link), temporary)
    else:
        data = repo.run("cat-file", "--filters", f"--path={path}", sha).stdout
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o777 if mode == _EXEC_MODE else 0o666)
        try:
            os.write(fd, data) if data else None
            os.fsync(fd)
        finally:
            os.close(fd)
    os.replace(temporary, target)


def temp_name(target: Path, new: str) -> Path:
    return target.with_name(f".{target.name}.healbot-{new[:12]}.tmp")


def _staged_index(index_file: Path, new: str) -> Path:
    return index_file.with_name(f"healbot-index-{new[:12]}")


def _build_index(
    repo: GitRepo, staged: Path, original: bytes, after: Mapping[str, Entry], paths: Sequence[str]
) -> None:
    """The operator's index with exactly `paths` set to the new commit's entries, in `staged`."""
    staged.write_bytes(original)
    lines = []
    for path in paths:
        entry = after.get(path)
        mode, sha = entry if entry is not None else ("0", _NULL_SHA)
        lines.append(f"{mode} {sha}\t{path}\n")
    repo.run(
        "update-index",
        "--index-info",
        input_bytes="".join(lines).encode("utf-8", errors="surrogateescape"),
        extra_env={"GIT_INDEX_FILE": str(staged)},
    )


def _swap_index(index_file: Path, staged: Path, lock: Path, original: bytes) -> None:
    """Take git's index lock with our staged index (a hard link: atomic, and recognisably ours), check
    that nobody wrote the index meanwhile, then rename it into place."""
    try:
        os.link(staged, lock)
    except FileExistsError:
        raise GitError(f"{lock} appeared: another git command is running; healbot backed out") from None
    current = index_file.read_bytes() if index_file.exists() else b""
    if current != original:
        lock.unlink()
        raise GitError(f"someone wrote {index_file} while healbot was landing; healbot backed out")
    os.replace(lock, index_file)


def _undo_landing(
    repo: GitRepo,
    new: str,
    base: str,
    paths: Sequence[str],
    written: Sequence[str],
    before: Mapping[str, Entry],
    after: Mapping[str, Entry],
    index_file: Path,
    original: bytes,
) -> None:
    """A landing that failed (not killed): back to the base for what we wrote, if the ref did not move."""
    if repo.head() != base:
        return
    for path in written:
        if worktree_entry(repo, path) == after.get(path):
            write_path(repo, path, before.get(path), new)
    lock = index_file.with_name(index_file.name + ".lock")
    if not lock.exists() and index_file.exists() and index_file.read_bytes() != original:
        entries = [(p, before.get(p) or ("0", _NULL_SHA)) for p in paths]
        lines = "".join(f"{mode} {sha}\t{path}\n" for path, (mode, sha) in entries)
        repo.run("update-index", "--index-info", input_bytes=lines.encode("utf-8", errors="surrogateescape"))


def _remove_own_leftovers(repo: GitRepo, new: str, paths: Sequence[str]) -> None:
    """What a kill during an earlier landing of `new` left, recognised exactly; nothing else is removed."""
    for path in paths:
        temp_name(repo.root / path, new).unlink(missing_ok=True)
    index_file = repo.index_path()
    staged = _staged_index(index_file, new)
    lock = index_file.with_name(index_file.name + ".lock")
    if staged.exists() and lock.exists() and os.path.samefile(staged, lock):
        lock.unlink()
    staged.with_name(staged.name + ".lock").unlink(missing_ok=True)
    staged.unlink(missing_ok=True)
    ref_lock = repo.head_ref_lock()
    if ref_lock.exists():
        content = ref_lock.read_bytes().strip()
        if content and new.encode().startswith(content):
            ref_lock.unlink()


def _prune_empty_dirs(root: Path, directory: Path) -> None:
    while directory != root and directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()  # never a tree: only a directory that is empty
        directory = directory.parent
