"""Shared pieces of the healers: a supervised subprocess runner, the repo path guard, the digest.

Nothing here changes the host by itself; the healers compose these helpers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from bot import proc
from bot.errors import HealerError, PatchError, PathEscapeError
from bot.models import FixKind
from bot.proc import ProcResult

TAIL_LINES = 40
TAIL_CHARS = 4000
MAX_OUTPUT_BYTES = 64 * 1024 * 1024  # per stream; a diff git prints for a fix is far below this

# Never handed to a check command or a runbook: the bot's own secrets and anything named like one.
_SECRET_ENV_NAMES = frozenset({"HEALBOT_TELEGRAM_TOKEN", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"})
_SECRET_ENV_PATTERN = re.compile(
    r"TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|PRIVATE_KEY|CREDENTIAL", re.IGNORECASE
)


CommandResult = ProcResult  # the name healers (and their tests) know the result by


def run_command(
    argv: Sequence[str],
    *,
    cwd: Path | str,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    input_bytes: bytes | None = None,
    merge_stderr: bool = False,
) -> CommandResult:
    """bot.proc.run in `cwd`: a missing executable raises HealerError; a non-zero exit or a timeout is
    reported, not raised."""
    return proc.run(
        argv,
        cwd=cwd,
        timeout_s=timeout_s,
        env=env,
        input_bytes=input_bytes,
        merge_stderr=merge_stderr,
        max_output_bytes=MAX_OUTPUT_BYTES,
        error=HealerError,
    )


def output_tail(text: str, max_lines: int = TAIL_LINES, max_chars: int = TAIL_CHARS) -> str:
    """The last lines of a command's output, for error messages and reports."""
    lines = text.rstrip().splitlines()[-max_lines:]
    tail = "\n".join(lines)
    return tail[-max_chars:]


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The bot's environment minus its secrets, for check commands and runbooks."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _SECRET_ENV_NAMES and not _SECRET_ENV_PATTERN.search(key)
    }
    if extra:
        env.update(extra)
    return env


def compute_digest(diff: str, base_commit: str, kind: FixKind, params: Mapping[str, str]) -> str:
    """SHA-256 hex over a canonical (JSON, sorted, versioned) encoding of what the operator approves."""
    document = {
        "v": 1,
        "diff": diff,
        "base_commit": base_commit,
        "kind": kind.value,
        "params": sorted([str(key), str(value)] for key, value in params.items()),
    }
    encoded = json.dumps(document, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


# --- the path guard ---------------------------------------------------------------------------------


def check_relative_path(path: str) -> PurePosixPath:
    """Reject, without touching the disk, a path that is empty, absolute, climbs, or names .git."""
    if not path or not path.strip():
        raise PathEscapeError("empty path")
    if "\x00" in path:
        raise PathEscapeError(f"path contains a NUL byte: {path!r}")
    if "\\" in path:
        raise PathEscapeError(f"path contains a backslash: {path!r}")
    pure = PurePosixPath(path)
    if pure.is_absolute() or path.startswith("~"):
        raise PathEscapeError(f"absolute path not allowed: {path}")
    if ".." in pure.parts:
        raise PathEscapeError(f"path leaves the repo: {path}")
    if any(part.casefold() == ".git" for part in pure.parts):
        raise PathEscapeError(f"path inside .git is not allowed: {path}")
    if not pure.parts or pure == PurePosixPath("."):
        raise PathEscapeError(f"path names the repo itself: {path!r}")
    return pure


def resolve_inside(root: Path, path: str) -> str:
    """Map `path` (relative to `root`) to the repo-relative path it really names, symlinks followed.

    Raises PathEscapeError when it resolves outside `root` or into its .git.
    """
    pure = check_relative_path(path)
    real_root = root.resolve()
    resolved = (real_root / pure).resolve(strict=False)
    try:
        relative = resolved.relative_to(real_root)
    except ValueError:
        raise PathEscapeError(f"path resolves outside the repo: {path} -> {resolved}") from None
    if not relative.parts:
        raise PathEscapeError(f"path names the repo itself: {path!r}")
    if any(part.casefold() == ".git" for part in relative.parts):
        raise PathEscapeError(f"path resolves inside .git: {path} -> {relative.as_posix()}")
    return relative.as_posix()


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Segment-aware glob: `*` and `?` stay inside one path segment, `**` spans any number of them.

    A pattern ending in `/` or `/**` matches everything below that directory.
    """
    if pattern.endswith("/"):
        pattern += "**"
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def path_allowed(relative: str, allowed_paths: Sequence[str]) -> bool:
    """True when no globs are configured, or `relative` matches one of them."""
    if not allowed_paths:
        return True
    return any(glob_to_regex(pattern).match(relative) for pattern in allowed_paths)


def check_allowed(relative: str, allowed_paths: Sequence[str], *, written_as: str | None = None) -> None:
    if not path_allowed(relative, allowed_paths):
        shown = relative if written_as in (None, relative) else f"{written_as} (-> {relative})"
        raise PatchError(f"path not in allowed_paths ({', '.join(allowed_paths)}): {shown}")
