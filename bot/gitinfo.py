"""Read-only facts about a service's repo, through the git CLI. Nothing here changes the repo.

Blocking; the pipeline calls these through asyncio.to_thread.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from bot import proc
from bot.errors import GitError

GIT_TIMEOUT_S = 30.0
GIT_MAX_OUTPUT_BYTES = 64 * 1024 * 1024
HEALBOT_TRAILER_PREFIX = "healbot-"
_SAFE_REV = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/~^@{}-]*")
_TRAILER_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_RECORD_END = "\x1e"
_FIELD_END = "\x1f"
_GIT_ENV_DROPPED = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR")


def run_git(repo: Path | str, *args: str, ok_codes: Sequence[int] = (0,)) -> tuple[int, bytes]:
    """Run git read-only (no optional locks, no hooks, no pager); GitError on failure or timeout."""
    env = {key: value for key, value in os.environ.items() if key not in _GIT_ENV_DROPPED}
    env.update({"GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C", "GIT_PAGER": "cat"})
    argv = ["git", "-c", "core.hooksPath=/dev/null", "-C", str(repo), *args]
    result = proc.run(
        argv, timeout_s=GIT_TIMEOUT_S, env=env, max_output_bytes=GIT_MAX_OUTPUT_BYTES, error=GitError
    )
    what = f"git {' '.join(args[:2])}"
    if result.returncode is None:
        raise GitError(f"{what} in {repo} did not finish in {GIT_TIMEOUT_S:g}s")
    if result.returncode not in ok_codes:
        message = result.stderr_text.strip()[-500:]
        raise GitError(f"{what} failed in {repo} (exit {result.returncode}): {message}")
    if result.truncated:  # a cut answer would be read as a whole one
        raise GitError(f"{what} in {repo} printed more than {GIT_MAX_OUTPUT_BYTES} bytes")
    return result.returncode, result.stdout


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _check_rev(rev: str) -> str:
    if not _SAFE_REV.fullmatch(rev):
        raise GitError(f"not a revision: {rev!r}")
    return rev


def short(sha: str) -> str:
    return sha[:7]


def head(repo: Path | str) -> str:
    """The full sha of HEAD; GitError when `repo` is not a git repo or has no commit."""
    return _text(run_git(repo, "rev-parse", "--verify", "HEAD^{commit}")[1]).strip()


def is_dirty(repo: Path | str, *, include_untracked: bool = False) -> list[str]:
    """Paths with uncommitted changes to tracked files (staged, unstaged, unmerged), sorted."""
    untracked = "all" if include_untracked else "no"
    raw = run_git(repo, "status", "--porcelain=v1", "-z", f"--untracked-files={untracked}")[1]
    fields = raw.decode("utf-8", errors="surrogateescape").split("\0")
    paths: set[str] = set()
    i = 0
    while i < len(fields):
        field = fields[i]
        i += 1
        if len(field) < 4:
            continue
        paths.add(field[3:])
        if "R" in field[:2] or "C" in field[:2]:
            paths.add(fields[i])
            i += 1
    return sorted(paths)


def recent_commits(repo: Path | str, paths: Sequence[str], n: int = 5) -> list[str]:
    """The last `n` commits touching `paths` (all commits when `paths` is empty): "sha7 date subject"."""
    pathspecs = [f":(literal){p}" for p in paths]
    raw = run_git(
        repo, "log", f"--max-count={max(n, 0)}", "--date=short", "--format=%H %ad %s", "--", *pathspecs
    )
    lines = []
    for line in _text(raw[1]).splitlines():
        sha, _, rest = line.partition(" ")
        lines.append(f"{short(sha)} {rest}")
    return lines


def show_file(repo: Path | str, path: str, rev: str = "HEAD") -> str | None:
    """The text of a repo-relative `path` at `rev` (from git's objects); None when it is not there."""
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts:
        return None
    code, raw = run_git(repo, "cat-file", "blob", f"{_check_rev(rev)}:{pure.as_posix()}", ok_codes=(0, 128))
    return _text(raw) if code == 0 else None


def commit_exists(repo: Path | str, sha: str) -> bool:
    if not _SAFE_REV.fullmatch(sha):
        return False
    code, _ = run_git(repo, "rev-parse", "--verify", "--quiet", f"{sha}^{{commit}}", ok_codes=(0, 1, 128))
    return code == 0


def trailers(repo: Path | str, sha: str) -> list[tuple[str, str]]:
    """(key, value) trailers of one commit, as git parses them."""
    raw = run_git(repo, "log", "-1", "--format=%(trailers:only,unfold)", _check_rev(sha), "--")[1]
    return _parse_trailers(_text(raw))


def _parse_trailers(text: str) -> list[tuple[str, str]]:
    found = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and _TRAILER_KEY.fullmatch(key.strip()):
            found.append((key.strip(), value.strip()))
    return found


def commit_with_trailer(repo: Path | str, key: str, value: str, since_rev: str | None = None) -> str | None:
    """The newest commit reachable from HEAD (after `since_rev` when given) whose trailer `key` equals
    `value`; keys compare case-insensitively, values exactly. Used to see whether an apply landed."""
    span = f"{_check_rev(since_rev)}..HEAD" if since_rev else "HEAD"
    fmt = f"--format=%H{_FIELD_END}%(trailers:only,unfold){_RECORD_END}"
    raw = _text(run_git(repo, "log", fmt, span, "--")[1])
    wanted = key.casefold()
    for record in raw.split(_RECORD_END):
        sha, sep, trailer_text = record.strip().partition(_FIELD_END)
        if not sep:
            continue
        if any(k.casefold() == wanted and v == value for k, v in _parse_trailers(trailer_text)):
            return sha
    return None


def is_healbot_commit(repo: Path | str, sha: str) -> bool:
    """True for a commit healbot made: it carries at least one `Healbot-*` trailer."""
    if not commit_exists(repo, sha):
        return False
    return any(key.casefold().startswith(HEALBOT_TRAILER_PREFIX) for key, _ in trailers(repo, sha))
