"""Is a service's repo locked by another process? Asked before an approved change is applied, so a locked
repo refuses the approval with a clear reason (the proposal stays open) instead of failing half-way.

Blocking; the pipeline calls `lock_holder` through asyncio.to_thread. Nothing here changes the repo.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from bot.errors import GitError
from bot.gitinfo import run_git

# the name healers.git_repo gives its cross-process apply lock (bot never imports a healer)
APPLY_LOCK_NAME = "healbot-apply.lock"


def lock_holder(repo: Path, *, check_index_lock: bool = True, check_apply_lock: bool = True) -> str | None:
    """A sentence naming the lock another process holds on `repo`, or None when it is free.

    `check_index_lock=False` for a change that does not touch git's index (a runbook command).
    `check_apply_lock=False` when this process may itself hold healbot's apply lock (a change of its own is
    being applied or verified): an flock is held per open file, so probing it would find ourselves."""
    git_dir, common_dir = _git_dirs(repo)
    index_lock = git_dir / "index.lock"
    if check_index_lock and index_lock.exists():
        return (
            f"another git process holds {index_lock} (if no git command is running, a crashed one left it: "
            "remove the file)"
        )
    apply_lock = common_dir / APPLY_LOCK_NAME
    if check_apply_lock and _flock_held(apply_lock):
        return f"another git process holds {apply_lock} (another healbot is changing {repo})"
    return None


def _flock_held(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise GitError(f"cannot read the lock file {path}: {exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _git_dirs(repo: Path) -> tuple[Path, Path]:
    try:
        _, out = run_git(repo, "rev-parse", "--absolute-git-dir", "--git-common-dir")
    except GitError as exc:
        raise GitError(f"{repo} is not a git repo: {exc}") from None
    lines = out.decode("utf-8", errors="surrogateescape").splitlines()
    if len(lines) != 2:
        raise GitError(f"{repo} is not a git repo: git rev-parse printed {len(lines)} line(s)")
    git_dir = Path(lines[0])
    common = Path(lines[1])
    return git_dir, common if common.is_absolute() else (repo / common).resolve()
