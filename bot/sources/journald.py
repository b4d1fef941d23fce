"""A systemd unit's journal, read by cursor: `journalctl -u UNIT -o json --cursor C`, minus entry C itself.

Not `--after-cursor`: journalctl 252 then skips one entry blindly, so when C's own entry was vacuumed
(`journalctl --vacuum-files`) the next line would be lost; `--cursor` starts at C, or at the first
entry after it when C is gone, and the source drops C's entry itself. (There is no `--head` either:
getopt takes it for `--header`.)

Each poll runs journalctl once (no long-lived `--follow` child to supervise). The first poll only
records where the journal ends (`-n 1`), like the file source starting at the end. MESSAGE may be a
string, or an array of byte values when the message was not valid UTF-8; a multi-line MESSAGE becomes
several lines so tracebacks assemble as in a file. journalctl exits 0 with "No journal files were
found." when there is no journal at all: that is reported as a source error, not as silence.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from bot.errors import SourceError
from bot.models import LogLine, SourceBatch
from bot.sources.command import MAX_OUTPUT_BYTES, Runner, default_runner
from bot.sources.file import clean_line

DEFAULT_TIMEOUT_S = 30.0
MAX_ENTRIES = 5000
MAX_LINE_BYTES = 8192
# journalctl 252 run by a user outside the journal's groups: exit 1, "No journal files were opened due to
# insufficient permissions."
NO_PERMISSION_HINT = (
    "; this user may not read the system journal: add it to the systemd-journal group "
    "(`sudo usermod -aG systemd-journal healbot`, then restart healbot)"
)


def parse_entries(
    stdout: bytes,
    source: str,
    *,
    complete: bool = True,
    skip_cursor: str | None = None,
    limit: int | None = None,
) -> tuple[list[LogLine], str | None]:
    """Lines of `journalctl -o json` output and the cursor of its last entry (None when empty).

    `complete=False`: the output was cut at the read cap, so its last entry may be partial; it is left
    for the next read (after the cursor of the last whole entry). The entry whose cursor is
    `skip_cursor` (read before) is left out; after `limit` entries the rest is left for the next read.
    """
    parsed = _parse(stdout, source, complete=complete, skip_cursor=skip_cursor, limit=limit)
    return parsed.lines, parsed.cursors[-1] if parsed.cursors else None


@dataclass(frozen=True, slots=True)
class _Parsed:
    lines: list[LogLine]
    cursors: list[str]  # of every entry kept, in order
    entry_of: list[int]  # the index in `cursors` of the entry each line came from


@dataclass(frozen=True, slots=True)
class _AfterPreviousEntry:
    """`SourceBatch.resume` of a journal batch: a line resumes after the entry before its own (entries are
    the journal's unit; a line from the middle of a multi-line MESSAGE resumes at its whole entry)."""

    before: str | None  # the cursor the batch was read after
    parsed: _Parsed

    def __call__(self, index: int) -> str:
        entry = self.parsed.entry_of[index]
        previous = self.parsed.cursors[entry - 1] if entry > 0 else self.before
        return json.dumps({"journal": previous})


def _parse(
    stdout: bytes, source: str, *, complete: bool, skip_cursor: str | None = None, limit: int | None = None
) -> _Parsed:
    lines: list[LogLine] = []
    cursors: list[str] = []
    entry_of: list[int] = []
    raws = stdout.splitlines()
    for index, raw in enumerate(raws):
        if limit is not None and len(cursors) >= limit:
            break
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
        except ValueError:
            if not complete and index == len(raws) - 1:
                break
            raise SourceError(
                f"{source}: journalctl printed a line that is not JSON: {raw[:120]!r}"
            ) from None
        if not isinstance(entry, dict) or not isinstance(entry.get("__CURSOR"), str):
            raise SourceError(f"{source}: journal entry without __CURSOR: {raw[:120]!r}")
        if entry["__CURSOR"] == skip_cursor:
            continue
        cursors.append(entry["__CURSOR"])
        message = entry.get("MESSAGE")
        if isinstance(message, list) and all(isinstance(b, int) and 0 <= b < 256 for b in message):
            data = bytes(message)
        elif isinstance(message, str):
            data = message.encode("utf-8", errors="replace")
        else:
            continue  # entries without a message (or with a null one) carry nothing to group
        for part in data.split(b"\n"):
            lines.append(
                LogLine(
                    text=clean_line(part[:MAX_LINE_BYTES]),
                    source=source,
                    line_no=len(lines) + 1,
                    truncated=len(part) > MAX_LINE_BYTES,
                )
            )
            entry_of.append(len(cursors) - 1)
    return _Parsed(lines, cursors, entry_of)


class JournaldSource:
    def __init__(
        self,
        service: str,
        unit: str,
        *,
        user: bool = False,
        binary: str = "journalctl",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        runner: Runner | None = None,
    ) -> None:
        if not unit:
            raise ValueError("unit must not be empty")
        self.service = service
        self.unit = unit
        self.user = user
        self.binary = binary
        self.timeout_s = timeout_s
        self.source_id = f"journald:{'user:' if user else ''}{unit}"
        self._run = runner or default_runner

    def argv(self, cursor: str | None, *, first: bool = False) -> list[str]:
        argv = [self.binary, *(["--user"] if self.user else []), "-u", self.unit, "-o", "json", "--no-pager"]
        if first:
            return [*argv, "-n", "1"]
        if cursor is None:  # the unit had no entries when we started: from the start (parse caps it)
            return argv
        return [*argv, "--cursor", cursor, "-n", str(MAX_ENTRIES + 1)]  # +1: entry `cursor` itself

    def read(self, cursor: str | None, max_bytes: int = 4 * 1024 * 1024) -> SourceBatch:
        journal_cursor = _load(cursor) if cursor is not None else None
        out = self._run(self.argv(journal_cursor, first=cursor is None), self.timeout_s)
        if out.returncode != 0:
            problem = (out.stderr or out.stdout).decode("utf-8", errors="replace").strip()[:300]
            hint = NO_PERMISSION_HINT if "insufficient permissions" in problem else ""
            raise SourceError(f"{self.source_id}: journalctl failed (exit {out.returncode}): {problem}{hint}")
        if b"No journal files were found" in out.stderr + out.stdout[:200]:
            raise SourceError(f"{self.source_id}: no journal files on this host (is journald running?)")
        parsed = _parse(
            out.stdout,
            self.source_id,
            complete=len(out.stdout) < MAX_OUTPUT_BYTES,
            skip_cursor=journal_cursor,
            limit=MAX_ENTRIES,
        )
        last = parsed.cursors[-1] if parsed.cursors else None
        if cursor is None:
            return SourceBatch(lines=(), cursor=json.dumps({"journal": last}))
        return SourceBatch(
            lines=tuple(parsed.lines),
            cursor=json.dumps({"journal": last or journal_cursor}),
            resume=_AfterPreviousEntry(journal_cursor, parsed),
        )


def _load(cursor: str) -> str | None:
    try:
        value = json.loads(cursor)["journal"]
    except (ValueError, TypeError, KeyError):
        raise SourceError(f"invalid journald cursor {cursor[:200]!r}") from None
    if value is not None and not isinstance(value, str):
        raise SourceError(f"invalid journald cursor {cursor[:200]!r}")
    return value
