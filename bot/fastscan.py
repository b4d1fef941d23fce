"""Errors-only scan of a whole file at buffer speed: a search over the memory-mapped file finds the lines
that may belong to an error record, and only a few lines around each hit are assembled.

The candidate pattern (bot.grepfilter.CANDIDATE_PATTERN) is a superset of what bot.grouping calls an error,
so the error groups equal those of the line-by-line scan; tests check that on the annotated sample logs.

The search is GNU grep when there is one (bot.grepfilter): its line numbers spare counting newlines, and
records are assembled while it reads on. Without grep, or when its report fails or looks wrong, `re`
searches the file instead, from the start; both searches select the same lines. Records are fingerprinted
only once the search is done, in file order, so a search given up leaves the grouper untouched.
"""

from __future__ import annotations

import logging
import mmap
import re
from pathlib import Path
from typing import TYPE_CHECKING

from bot.errors import SourceError
from bot.fingerprint_memo import FingerprintMemo
from bot.grepfilter import CANDIDATE_PATTERN, GrepHits, grep_timeout
from bot.models import Fingerprint, LogLine, LogRecord
from bot.records import (
    JAVA_CAUSE,
    JAVA_EXCEPTION_LINE,
    JAVA_FRAME,
    JAVA_MORE,
    PY_TRACEBACK,
    RecordAssembler,
    strip_line_prefix,
)
from bot.textclean import clean_line

if TYPE_CHECKING:
    from bot.grouping import Grouper, ScanResult

log = logging.getLogger(__name__)

CANDIDATE = re.compile(CANDIDATE_PATTERN.encode("ascii"))
BACK_LINES = 2  # a record may start this many lines before its first candidate (logging.exception's line)
# What a line must look like to continue a record begun by lines without candidates (bot.records).
_CONTINUATIONS = (PY_TRACEBACK, JAVA_EXCEPTION_LINE, JAVA_FRAME, JAVA_MORE, JAVA_CAUSE)
_COUNT_CHUNK = 1024 * 1024  # newlines are counted in slices this big (they stay in the CPU cache)


def scan_errors(
    path: Path,
    service: str,
    grouper: Grouper,
    *,
    max_line_bytes: int,
    use_grep: bool = True,
    hits: GrepHits | None = None,
) -> ScanResult:
    """Error groups of `path`. `hits`: a grep already started on it (its output is read here and closed);
    without one a grep is started unless `use_grep` is False."""
    from bot.grouping import ScanGroup, ScanResult  # grouping imports this module

    try:
        try:
            with path.open("rb") as fh:
                size = path.stat().st_size
                if size == 0:
                    return ScanResult(
                        groups=(), line_groups=[], lines=0, records=0, error_records=0, complete=False
                    )
                with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
                    if hits is None and use_grep:
                        hits = GrepHits.start(path, timeout_s=grep_timeout(size))
                    finder = _Finder(data, service, max_line_bytes)
                    if hits is None or not finder.take_grep_hits(hits):
                        finder = _Finder(data, service, max_line_bytes)  # start over without grep
                        finder.search()
                    lines = finder.count_lines()
        finally:
            if hits is not None:
                hits.close()
    except FileNotFoundError:
        raise SourceError(f"{path}: file not found") from None
    except PermissionError:
        raise SourceError(f"{path}: permission denied (the bot's user cannot read it)") from None
    except (OSError, ValueError) as exc:
        raise SourceError(f"{path}: cannot be read: {exc}") from None
    memo = FingerprintMemo(grouper)  # a flood of one message is grouped once per digit shape
    found = [(record, fp) for record in finder.candidates if (fp := memo.fingerprint(record)).is_error]
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


def _count_newlines(data: mmap.mmap, start: int, end: int) -> int:
    total = 0
    view = memoryview(data)
    try:
        for at in range(start, end, _COUNT_CHUNK):
            total += bytes(view[at : min(end, at + _COUNT_CHUNK)]).count(b"\n")
    finally:
        view.release()
    return total


class _Finder:
    """Assembles the error records around candidate lines, in file order, from whichever search."""

    def __init__(self, data: mmap.mmap, service: str, max_line_bytes: int) -> None:
        self.data = data
        self.service = service
        self.max_line_bytes = max_line_bytes
        self.candidates: list[LogRecord] = []  # records from a candidate's line on, in file order
        self.covered = 0  # everything before this offset has been assembled; it is a line start
        self.covered_line = 1  # 1 + newlines before `covered`

    def take_grep_hits(self, hits: GrepHits) -> bool:
        """Assemble around the lines grep reports, checking each is a line start holding a candidate;
        False when grep's report turned out unusable (then `candidates` is incomplete)."""
        data = self.data
        for offset, line_no in hits:
            if offset < self.covered:
                continue
            line_end = data.find(b"\n", offset)
            numbered = line_no == self.covered_line if offset == self.covered else line_no > self.covered_line
            if not (
                numbered
                and (offset == 0 or data[offset - 1] == 0x0A)
                and CANDIDATE.search(data, offset, len(data) if line_end < 0 else line_end)
            ):
                hits.fail(f"grep reported line {line_no} at byte {offset}, which holds no candidate")
                break
            self.take(offset, line_no)
        if hits.failure is not None:
            log.debug("grep pre-filter failed (%s); searching with re instead", hits.failure)
            return False
        return True

    def search(self) -> None:
        """Assemble around every candidate, found by `re`."""
        for hit in CANDIDATE.finditer(self.data):
            self.take(hit.start(), None)

    def count_lines(self) -> int:
        size = len(self.data)
        trailing = 0 if self.data[size - 1 : size] == b"\n" else 1
        return self.covered_line - 1 + _count_newlines(self.data, self.covered, size) + trailing

    def take(self, at: int, line_no: int | None) -> None:
        """Assemble the record holding the candidate at offset `at`; `line_no`: its line's number if known."""
        data = self.data
        covered = self.covered
        if at < covered:
            return
        start = data.rfind(b"\n", covered, at) + 1 if at > covered else covered
        start = max(start, covered)
        hit_start = start
        back = 0
        for _ in range(BACK_LINES):
            if start <= covered:
                break
            start = data.rfind(b"\n", covered, start - 1) + 1
            start = max(start, covered)
            back += 1
        if back and self._starts_a_record(start, hit_start):
            start, back = hit_start, 0
        if line_no is None:
            first_line = self.covered_line + _count_newlines(data, covered, start)
        else:
            first_line = line_no - back
        self.covered, self.covered_line = self._assemble(start, first_line, at)

    def _starts_a_record(self, back_start: int, hit_start: int) -> bool:
        """True when the line at `hit_start` begins a record whatever the lines from `back_start` hold.

        Those lines hold no candidate (no "Traceback", "Exception", "Error", "Throwable"), and without NUL
        or ESC bytes (cleaning removes them and could join such a word) their text holds none either. So
        they leave the assembler in state LINE or JAVA, and from there only a line that looks like a
        traceback start, a Java exception line, frame, cause or "... N more" continues the record.
        """
        data = self.data
        if data.find(b"\x00", back_start, hit_start) >= 0 or data.find(b"\x1b", back_start, hit_start) >= 0:
            return False
        newline = data.find(b"\n", hit_start)
        end = len(data) if newline < 0 else newline
        body = strip_line_prefix(clean_line(data[hit_start : min(end, hit_start + self.max_line_bytes)]))
        return not any(pattern.match(body) for pattern in _CONTINUATIONS)

    def _assemble(self, start: int, line_no: int, hit: int) -> tuple[int, int]:
        """Assemble lines from `start` (line `line_no`) until the record holding `hit` is complete; return
        where it ended and the number of the line starting there."""
        data = self.data
        size = len(data)
        cap = self.max_line_bytes
        candidates = self.candidates
        assembler = RecordAssembler(self.service, "scan")
        feed = assembler.feed
        position = start
        hit_line = -1
        while True:
            if position >= size:
                records = assembler.flush()
                done = True
            else:
                newline = data.find(b"\n", position)
                end = size if newline < 0 else newline + 1
                raw = data[position : min(end, position + cap + 1)].rstrip(b"\n")
                line = LogLine(clean_line(raw[:cap]), "scan", line_no, len(raw) > cap)
                if hit_line < 0 and end > hit:
                    hit_line = line_no
                records = feed((line,), 0.0)
                done = False
            for record in records:
                if record.first_line_no + record.line_count <= hit_line or hit_line < 0:
                    continue  # a line before the hit: it holds no candidate, so it is not an error
                candidates.append(record)  # fingerprinted later, in this order, when the search is done
            if done:
                return size, line_no if data[size - 1 : size] == b"\n" else line_no - 1
            if hit_line >= 0 and records and records[-1].first_line_no + records[-1].line_count > hit_line:
                return position, line_no  # the line at `position` began the next record: not consumed
            position = end
            line_no += 1
