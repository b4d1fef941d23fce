"""A window of the service's log: the lines around a time or a record, or those matching a pattern, read
from the sources healbot watches (its log files, the journal of a systemd unit, `docker logs`), newest
first and capped."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bot.mcp_server.refused import ToolRefused

TAIL_BYTES = 4 * 1024 * 1024  # of each file: how far back a window can reach
TAIL_ENTRIES = 5000  # of the journal or docker logs
COMMAND_TIMEOUT_S = 10.0
MAX_LINE_CHARS = 2000
_TIME = re.compile(r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}(?::\d{2})?)")


@dataclass(frozen=True, slots=True)
class Line:
    source: str
    number: int  # 1-based within what was read of that source
    text: str


def _file_tail(path: Path) -> list[Line]:
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - TAIL_BYTES))
        data = handle.read()
    texts = data.decode("utf-8", errors="replace").splitlines()
    if size > TAIL_BYTES and texts:
        texts = texts[1:]  # probably cut in the middle
    return [Line(str(path), n, t[:MAX_LINE_CHARS]) for n, t in enumerate(texts, start=1)]


def _command_tail(source: str, argv: list[str]) -> list[Line]:
    try:
        out = subprocess.run(argv, capture_output=True, timeout=COMMAND_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolRefused(f"{source}: could not be read: {exc}") from None
    text = (out.stdout + out.stderr).decode("utf-8", errors="replace")
    return [Line(source, n, t[:MAX_LINE_CHARS]) for n, t in enumerate(text.splitlines(), start=1)]


def read_sources(
    log_paths: tuple[str, ...], journal_unit: str | None, docker_container: str | None
) -> tuple[list[list[Line]], list[str]]:
    """The lines of each source, oldest first, and the sources that could not be read."""
    found: list[list[Line]] = []
    problems: list[str] = []
    for raw in log_paths:
        try:
            found.append(_file_tail(Path(raw)))
        except OSError as exc:
            problems.append(f"{raw}: {exc.strerror or exc}")
    commands: list[tuple[str, list[str]]] = []
    if journal_unit:
        argv = ["journalctl", "-u", journal_unit, "-n", str(TAIL_ENTRIES), "-o", "short-iso", "--no-pager"]
        commands.append((f"journal:{journal_unit}", argv))
    if docker_container:
        argv = ["docker", "logs", "--timestamps", "--tail", str(TAIL_ENTRIES), docker_container]
        commands.append((f"docker:{docker_container}", argv))
    for source, argv in commands:
        try:
            found.append(_command_tail(source, argv))
        except ToolRefused as exc:
            problems.append(str(exc))
    return found, problems


def _time_key(around: str) -> str | None:
    match = _TIME.search(around)
    return f"{match.group(1)} {match.group(2)}" if match else None


def window(
    sources: list[list[Line]],
    *,
    around: str = "",
    pattern: str = "",
    context: int = 10,
    max_lines: int = 100,
) -> list[Line]:
    """The chosen lines, newest first. `around` is a time (`2026-12-03T14:05`, to the minute or second)
    or a piece of a record's text: the lines near its newest occurrence; `pattern` is a regular expression
    the lines must match; neither: the newest lines."""
    regex = None
    if pattern:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ToolRefused(f"pattern {pattern!r} is not a valid regular expression: {exc}") from None
    chosen: list[Line] = []
    time_key = _time_key(around) if around else None
    for lines in sources:
        if around:
            picked = _near(lines, around, time_key, context)
            if regex is not None:
                picked = [line for line in picked if regex.search(line.text)]
        elif regex is not None:
            picked = [line for line in lines if regex.search(line.text)]
        else:
            picked = lines[-max_lines:]
        chosen.extend(reversed(picked[-max_lines:]))  # newest first within each source
    return chosen[:max_lines]


def _near(lines: list[Line], around: str, time_key: str | None, context: int) -> list[Line]:
    def hit(line: Line) -> bool:
        if time_key is not None:
            stamp = _time_key(line.text)
            return stamp is not None and stamp.startswith(time_key)
        return around in line.text

    for index in range(len(lines) - 1, -1, -1):
        if hit(lines[index]):
            return lines[max(0, index - context) : index + context + 1]
    return []


def render(lines: list[Line], problems: list[str], what: str) -> str:
    head = f"{len(lines)} log line(s) {what}, newest first:" if lines else f"no log lines {what}"
    body = "\n".join(f"[{line.source}:{line.number}] {line.text}" for line in lines)
    unread = ("\n(could not read: " + "; ".join(problems) + ")") if problems else ""
    return head + ("\n" + body if body else "") + unread
