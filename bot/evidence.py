"""Gather what a diagnosis may see about an incident: redacted samples, code around its stack frames
(read from git at HEAD, never from outside the repo), recent commits on those files, and HEAD."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path, PurePath

from bot import gitinfo
from bot.models import CodeContext, Evidence, Frame, Incident

LINES_BEFORE = 6
LINES_AFTER = 5
MAX_FRAMES = 8
MAX_LINE_CHARS = 300
RECENT_COMMITS = 5


def collect_evidence(
    incident: Incident,
    *,
    repo: Path,
    allowed_paths: Sequence[str],
    runbooks: Sequence[str],
    past_outcomes: Sequence[str],
    redact: Callable[[str], str],
) -> Evidence:
    root = Path(repo).resolve()
    head = gitinfo.head(root)
    code = _code_contexts(root, incident.frames, redact)
    paths = list(dict.fromkeys(context.path for context in code))
    commits = gitinfo.recent_commits(root, paths, n=RECENT_COMMITS)
    return Evidence(
        service=incident.service,
        title=redact(incident.title),
        fingerprint=incident.fingerprint,
        exception_type=incident.exception_type,
        count=incident.count,
        first_seen=incident.first_seen,
        last_seen=incident.last_seen,
        samples=tuple(redact(sample) for sample in incident.samples),
        code=code,
        recent_commits=tuple(redact(line) for line in commits),
        past_outcomes=tuple(redact(line) for line in past_outcomes),
        allowed_paths=tuple(allowed_paths),
        runbooks=tuple(runbooks),
        head=head,
    )


def _code_contexts(
    root: Path, frames: Sequence[Frame], redact: Callable[[str], str]
) -> tuple[CodeContext, ...]:
    """Context for the innermost MAX_FRAMES distinct frames inside the repo, in traceback order."""
    contexts: list[CodeContext] = []
    seen: set[tuple[str, int]] = set()
    for frame in reversed(frames):
        relative = repo_relative(root, frame.path)
        if relative is None or (relative, frame.line) in seen:
            continue
        seen.add((relative, frame.line))
        text = gitinfo.show_file(root, relative)
        if text is None:  # not tracked at HEAD: generated, vendored, or a virtualenv inside the repo
            continue
        # the whole file first: a window may cut a PEM block's BEGIN line or a long line in two
        snippet = numbered_snippet(redact(text), frame.line)
        if not snippet:
            continue
        contexts.append(CodeContext(relative, frame.line, frame.function, redact(snippet)))
        if len(contexts) >= MAX_FRAMES:
            break
    return tuple(reversed(contexts))


def repo_relative(root: Path, frame_path: str) -> str | None:
    """The repo-relative path a traceback path names, or None when it lies outside the repo
    (stdlib, site-packages, `<frozen …>`, or a `..`/symlink escape). `root` must be resolved."""
    if not frame_path or frame_path.startswith("<") or "\x00" in frame_path:
        return None
    written = PurePath(frame_path)
    if not written.is_absolute() and ".." in written.parts:
        return None
    candidate = Path(frame_path) if written.is_absolute() else root / written
    try:
        relative = candidate.resolve(strict=False).relative_to(root)
    except (ValueError, OSError, RuntimeError):
        return None
    if not relative.parts or ".git" in relative.parts:
        return None
    return relative.as_posix()


def numbered_snippet(text: str, line: int) -> str:
    """Lines around `line` (1-based), numbered, the frame's own line marked with `>`."""
    lines = text.splitlines()
    if line < 1 or line > len(lines):
        return ""
    first = max(1, line - LINES_BEFORE)
    last = min(len(lines), line + LINES_AFTER)
    width = len(str(last))
    out = []
    for number in range(first, last + 1):
        marker = ">" if number == line else " "
        source = lines[number - 1][:MAX_LINE_CHARS]
        out.append(f"{marker} {number:>{width}} | {source}".rstrip())
    return "\n".join(out)
