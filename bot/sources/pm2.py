"""A PM2 app's out/err log file, as `pm2 jlist` names it (pm_out_log_path / pm_err_log_path).

PM2 writes three shapes. The default (raw lines) and the `--time` / `--log-date-format` stamps before each
line are plain lines: bot.records ignores those stamps when it joins a traceback. `--log-type json` writes
one JSON object per write *chunk*, `{"message": "...\\n", "timestamp": ..., "type": "err", "process_id": 0,
"app_name": "svc"}`; a whole traceback can arrive in one object, glued to the next line. Such an entry is
unwrapped here into the physical lines of its message, each cleaned and capped like a file line. The shape
is recognised per line from the content (an object carrying PM2's own keys), so a file that switches
log type keeps working and a plain app logging its own JSON is left alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bot.models import LogLine, SourceBatch
from bot.sources.file import POLL_MAX_BYTES, FileSource, clean_text

# A JSON entry carries its message escaped, so the file line may be longer than the lines inside it.
JSON_LINE_BYTES = 64 * 1024
PM2_KEYS = frozenset({"message", "timestamp", "type", "app_name"})
MAX_LINES_PER_ENTRY = 1000


def unwrap_pm2_json(line: LogLine, max_line_bytes: int) -> tuple[LogLine, ...] | None:
    """The message lines of one PM2 `--log-type json` entry, or None when `line` is not such an entry."""
    text = line.text
    if line.truncated or not text.startswith("{") or '"app_name"' not in text:
        return None
    try:
        entry = json.loads(text)
    except ValueError:
        return None
    if not isinstance(entry, dict) or not entry.keys() >= PM2_KEYS or not isinstance(entry["message"], str):
        return None
    parts = entry["message"].split("\n")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    omitted = max(0, len(parts) - MAX_LINES_PER_ENTRY)
    if omitted:
        parts = parts[:MAX_LINES_PER_ENTRY]
    lines = [
        LogLine(
            clean_text(part)[:max_line_bytes], line.source, line.line_no, truncated=len(part) > max_line_bytes
        )
        for part in parts
    ]
    if omitted:
        lines.append(LogLine(f"… ({omitted} more lines in this PM2 entry)", line.source, line.line_no, True))
    return tuple(lines)


class Pm2LogSource:
    """A LogSource over one PM2 log file; the cursor is the file source's (same id, same cursor)."""

    def __init__(self, service: str, path: Path, *, max_line_bytes: int = 8192) -> None:
        if max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be at least 1, not {max_line_bytes}")
        self.service = service
        self.path = Path(path)
        self.max_line_bytes = max_line_bytes
        self._file = FileSource(service, self.path, max_line_bytes=max(max_line_bytes, JSON_LINE_BYTES))
        self.source_id = self._file.source_id

    def start_cursor(self) -> str:
        return self._file.start_cursor()

    def nothing_new(self, cursor: str | None) -> bool:
        return self._file.nothing_new(cursor)

    def read(self, cursor: str | None, max_bytes: int = POLL_MAX_BYTES) -> SourceBatch:
        batch = self._file.read(cursor, max_bytes)
        lines: list[LogLine] = []
        origin: list[int] = []  # the file line each output line came from
        for index, line in enumerate(batch.lines):
            unwrapped = unwrap_pm2_json(line, self.max_line_bytes)
            if unwrapped is not None:
                lines.extend(unwrapped)
                origin.extend([index] * len(unwrapped))
            elif len(line.text) > self.max_line_bytes:
                lines.append(LogLine(line.text[: self.max_line_bytes], line.source, line.line_no, True))
                origin.append(index)
            else:
                lines.append(line)
                origin.append(index)
        resume = None if batch.resume is None else _EntryStart(batch.resume, tuple(origin))
        return SourceBatch(lines=tuple(lines), cursor=batch.cursor, resume=resume)


@dataclass(frozen=True, slots=True)
class _EntryStart:
    """Where an output line resumes: at the start of the file line it came from. A line from the middle of
    a JSON entry resumes at the whole entry, so the entry's earlier lines are read again after a crash
    (counted twice rather than lost)."""

    file_resume: Callable[[int], str]
    origin: tuple[int, ...]

    def __call__(self, index: int) -> str:
        return self.file_resume(self.origin[index])
