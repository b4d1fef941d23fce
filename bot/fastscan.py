"""Errors-only scan of a whole file at buffer speed: one regex over the memory-mapped file finds the
lines that may belong to an error record, and only a few lines around each hit are assembled.

The candidate pattern is a superset of what bot.grouping calls an error (level words ERROR and worse,
exception class names, tracebacks, Java causes, `panic`, `error:`/`fatal:`, HTTP 5xx access lines), so
the error groups equal those of the line-by-line scan; tests check that on the annotated sample logs.
"""

from __future__ import annotations

import mmap
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bot.errors import SourceError
from bot.models import Fingerprint, LogLine, LogRecord
from bot.records import RecordAssembler
from bot.sources.file import clean_line

if TYPE_CHECKING:
    from bot.grouping import Grouper, ScanResult

CANDIDATE = re.compile(
    rb"ERR|CRIT|FATAL|SEVERE|ALERT|EMERG|PANIC|Error|Exception|Throwable|Traceback|Caused by"
    rb"|panic|error|fatal|HTTP/[\d.]+\" 5"
)
BACK_LINES = 2  # a record may start this many lines before its first candidate (logging.exception's line)


def scan_errors(path: Path, service: str, grouper: Grouper, *, max_line_bytes: int) -> ScanResult:
    from bot.grouping import ScanGroup, ScanResult  # grouping imports this module

    try:
        with path.open("rb") as fh:
            size = path.stat().st_size
            if size == 0:
                return ScanResult(
                    groups=(), line_groups=[], lines=0, records=0, error_records=0, complete=False
                )
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
                found = _Finder(data, service, max_line_bytes).run(grouper.fingerprint)
                lines = _count_newlines(data, 0, size) + (0 if data[size - 1 : size] == b"\n" else 1)
    except FileNotFoundError:
        raise SourceError(f"{path}: file not found") from None
    except PermissionError:
        raise SourceError(f"{path}: permission denied (the bot's user cannot read it)") from None
    except (OSError, ValueError) as exc:
        raise SourceError(f"{path}: cannot be read: {exc}") from None
    counts: dict[str, int] = {}
    firsts: dict[str, tuple[LogRecord, Fingerprint]] = {}
    line_groups: list[tuple[int, str]] = []
    for record, fp in found:
        counts[fp.key] = counts.get(fp.key, 0) + 1
        firsts.setdefault(fp.key, (record, fp))
        line_groups.extend((record.first_line_no + i, fp.key) for i in range(record.line_count))
    groups = [
        ScanGroup(
            key=key,
            template=fp.template,
            count=counts[key],
            first_line=record.first_line_no,
            sample=record.text,
            is_error=True,
            exception_type=fp.exception_type,
        )
        for key, (record, fp) in firsts.items()
    ]
    groups.sort(key=lambda g: (-g.count, g.first_line))
    return ScanResult(
        groups=tuple(groups),
        line_groups=line_groups,
        lines=lines,
        records=len(found),
        error_records=len(found),
        complete=False,
    )


def _count_newlines(data: mmap.mmap, start: int, end: int, chunk: int = 16 * 1024 * 1024) -> int:
    total = 0
    for at in range(start, end, chunk):
        total += data[at : min(end, at + chunk)].count(b"\n")
    return total


class _Finder:
    def __init__(self, data: mmap.mmap, service: str, max_line_bytes: int) -> None:
        self.data = data
        self.service = service
        self.max_line_bytes = max_line_bytes
        self.counted_to = 0  # newlines before this offset are counted in counted_lines
        self.counted_lines = 0

    def line_no(self, offset: int) -> int:
        """1-based number of the line starting at `offset` (offsets only grow between calls)."""
        self.counted_lines += _count_newlines(self.data, self.counted_to, offset)
        self.counted_to = offset
        return self.counted_lines + 1

    def run(self, fingerprint: Callable[[LogRecord], Fingerprint]) -> list[tuple[LogRecord, Fingerprint]]:
        data = self.data
        found: list[tuple[LogRecord, Fingerprint]] = []
        covered = 0  # everything before this offset has been assembled
        for hit in CANDIDATE.finditer(data):
            at = hit.start()
            if at < covered:
                continue
            start = data.rfind(b"\n", covered, at) + 1 if at > covered else covered
            start = max(start, covered)
            for _ in range(BACK_LINES):
                if start <= covered:
                    break
                start = data.rfind(b"\n", covered, start - 1) + 1
                start = max(start, covered)
            covered = self._assemble(start, at, fingerprint, found)
        return found

    def _assemble(
        self,
        start: int,
        hit: int,
        fingerprint: Callable[[LogRecord], Fingerprint],
        found: list[tuple[LogRecord, Fingerprint]],
    ) -> int:
        """Assemble lines from `start` until the record holding `hit` is complete; return where it ended."""
        data = self.data
        assembler = RecordAssembler(self.service, "scan")
        line_no = self.line_no(start)
        position = start
        hit_line = -1
        while True:
            if position >= len(data):
                records = assembler.flush()
                end = len(data)
                done = True
            else:
                newline = data.find(b"\n", position)
                end = len(data) if newline < 0 else newline + 1
                raw = data[position : min(end, position + self.max_line_bytes + 1)].rstrip(b"\n")
                truncated = len(raw) > self.max_line_bytes
                line = LogLine(clean_line(raw[: self.max_line_bytes]), "scan", line_no, truncated)
                if hit_line < 0 and end > hit:
                    hit_line = line_no
                records = assembler.feed((line,), 0.0)
                done = False
            for record in records:
                if record.first_line_no + record.line_count <= hit_line or hit_line < 0:
                    continue  # a line before the hit: it holds no candidate, so it is not an error
                fp = fingerprint(record)
                if fp.is_error:
                    found.append((record, fp))
            if done:
                return end
            if hit_line >= 0 and records and records[-1].first_line_no + records[-1].line_count > hit_line:
                return position  # the line at `position` began the next record: not consumed
            position = end
            line_no += 1
