"""Errors-only scan of a whole file at buffer speed: a search over the memory-mapped file finds the lines
that may belong to an error record, and only a few lines around each hit are assembled.

The candidate pattern (bot.grepfilter.CANDIDATE_PATTERN) is a superset of what bot.grouping calls an error,
so the error groups equal those of the line-by-line scan; tests check that on the annotated sample logs.

The search is GNU grep when there is one (bot.grepfilter): its line numbers spare counting newlines, and
records are assembled while it reads on. Without grep, or when its report fails or looks wrong, `re`
searches the file instead, from the start; both searches select the same lines. Records are fingerprinted
in file order: once the search is done, so a search given up leaves the grouper untouched, or, for a caller
that can make another grouper (`healbot scan`), while grep reads on.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import mmap
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bot.errors import SourceError
from bot.fingerprint_memo import FingerprintMemo, KeyLayout, MemoKey, key_layout, memo_key, memo_key_by_layout
from bot.grepfilter import CANDIDATE_PATTERN, GrepHits, grep_timeout
from bot.record_types import Fingerprint, LogLine, LogRecord
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
_DIGITS = bytes.maketrans(b"0123456789", b"1111111111")  # a line's shape, as record assembly sees it
_MAX_WINDOWS = 4096  # windows of distinct shapes remembered per scan
_MAX_WINDOW_LINES = 32
_MAX_WINDOW_BYTES = 64 * 1024
_FINGERPRINT_SLICE = 32  # records fingerprinted between two looks at grep's output
_RELEASE_BYTES = 8 * 1024 * 1024  # assembled bytes whose pages are given back at a time


def scan_errors(
    path: Path,
    service: str,
    grouper: Grouper,
    *,
    max_line_bytes: int,
    use_grep: bool = True,
    hits: GrepHits | None = None,
    line_groups: bool = True,
    regroup: Callable[[], Grouper] | None = None,
) -> ScanResult:
    """Error groups of `path`. `hits`: a grep already started on it (its output is read here and closed);
    without one a grep is started unless `use_grep` is False. `line_groups`: False leaves the result's
    `line_groups` empty (a line number per line of every error record: only `--groups-out` writes them).

    `regroup`: given, records are fingerprinted into `grouper` while grep still reads; should grep's report
    then turn out unusable, the `re` search starts over with a grouper `regroup()` makes (so the caller
    merges the groups with the last grouper it made). Without it, fingerprinting waits for the search.
    """
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
                    fingerprints = _Fingerprints(finder, grouper)
                    if hits is not None:
                        hits.while_waiting = _while_grep_reads(finder, fingerprints if regroup else None)
                    if hits is None or not finder.take_grep_hits(hits):
                        finder = _Finder(data, service, max_line_bytes)  # start over without grep
                        if fingerprints.taken and regroup is not None:
                            grouper = regroup()
                        fingerprints = _Fingerprints(finder, grouper)
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
    fingerprints.more()
    found = fingerprints.found
    counts: dict[str, int] = {}
    firsts: dict[str, tuple[LogRecord, Fingerprint]] = {}
    lines_of_groups: list[tuple[int, str]] = []
    for record, fp in found:
        counts[fp.key] = counts.get(fp.key, 0) + 1
        firsts.setdefault(fp.key, (record, fp))
        if line_groups:
            first = record.first_line_no
            lines_of_groups.extend(zip(range(first, first + record.line_count), itertools.repeat(fp.key)))
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
        line_groups=lines_of_groups,
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


def _while_grep_reads(finder: _Finder, fingerprints: _Fingerprints | None) -> Callable[[], bool]:
    """What is done while grep's output is awaited: the pages of what was assembled are given back, and
    the records found so far are fingerprinted (with `fingerprints`) a slice at a time."""

    def work() -> bool:
        finder.release_assembled()
        return fingerprints is not None and fingerprints.more(_FINGERPRINT_SLICE)

    return work


class _Fingerprints:
    """The candidates' fingerprints, computed in file order, those of errors kept in `found`."""

    def __init__(self, finder: _Finder, grouper: Grouper) -> None:
        self._finder = finder
        self._memo = FingerprintMemo(grouper)  # a flood of one message is grouped once per digit shape
        self.found: list[tuple[LogRecord, Fingerprint]] = []
        self.taken = 0  # candidates fingerprinted so far

    def more(self, limit: int | None = None) -> bool:
        """Fingerprint the next `limit` candidates (None: all); True while candidates are left."""
        candidates, keys = self._finder.candidates, self._finder.memo_keys
        available = min(len(candidates), len(keys))
        end = available if limit is None else min(available, self.taken + limit)
        fingerprint = self._memo.fingerprint
        found = self.found
        for index in range(self.taken, end):
            record = candidates[index]
            fp = fingerprint(record, keys[index])
            if fp.is_error:
                found.append((record, fp))
        self.taken = end
        return end < available


class _Finder:
    """Assembles the error records around candidate lines, in file order, from whichever search."""

    def __init__(self, data: mmap.mmap, service: str, max_line_bytes: int) -> None:
        self.data = data
        self.service = service
        self.max_line_bytes = max_line_bytes
        self.candidates: list[LogRecord] = []  # records from a candidate's line on, in file order
        self.memo_keys: list[MemoKey] = []  # of each candidate, computed while grep reads on
        self.covered = 0  # everything before this offset has been assembled; it is a line start
        self.covered_line = 1  # 1 + newlines before `covered`
        self._windows = _Windows()
        self._starts: dict[bytes, bool] = {}  # `_starts_a_record`'s answer by the shape of the hit's line
        self._released = 0  # the pages before this offset were given back

    def release_assembled(self) -> None:
        """Give back the pages of what was assembled: no search reads before `covered` again (one that does
        reads the file anew), and unmapping them all at the end would delay the scan's result."""
        end = (self.covered - 1) // mmap.PAGESIZE * mmap.PAGESIZE  # keeps the page of the byte before
        if end - self._released >= _RELEASE_BYTES:
            with contextlib.suppress(AttributeError, OSError):  # no madvise (not Linux): unmapped at the end
                self.data.madvise(mmap.MADV_DONTNEED, self._released, end - self._released)
            self._released = end

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
        raw = data[hit_start : min(end, hit_start + self.max_line_bytes)]
        line_shape = raw.translate(_DIGITS)  # the answer is blind to digit values, as assembly is
        known = self._starts.get(line_shape)
        if known is None:
            body = strip_line_prefix(clean_line(raw))
            known = not any(pattern.match(body) for pattern in _CONTINUATIONS)
            if len(self._starts) < _MAX_WINDOWS:
                self._starts[line_shape] = known
        return known

    def _assemble(self, start: int, line_no: int, hit: int) -> tuple[int, int]:
        """Assemble lines from `start` (line `line_no`) until the record holding `hit` is complete; return
        where it ended and the number of the line starting there."""
        hit_index = 0  # of the line holding `hit`, from `start`
        newline = self.data.find(b"\n", start, hit)
        while newline >= 0:
            hit_index += 1
            newline = self.data.find(b"\n", newline + 1, hit)
        known = self._windows.replay(self, start, line_no, hit_index)
        return known if known is not None else self._assemble_in_full(start, line_no, hit, hit_index)

    def _assemble_in_full(self, start: int, line_no: int, hit: int, hit_index: int) -> tuple[int, int]:
        data = self.data
        size = len(data)
        cap = self.max_line_bytes
        candidates = self.candidates
        taken = len(candidates)
        assembler = RecordAssembler(self.service, "scan")
        feed = assembler.feed
        position = start
        first_line_no = line_no
        hit_line = -1
        fed: list[tuple[bytes, str]] = []  # each line's shape and text, for the window memo
        while True:
            if position >= size:
                records = assembler.flush()
                done = True
            else:
                newline = data.find(b"\n", position)
                end = size if newline < 0 else newline + 1
                raw = data[position : min(end, position + cap + 1)].rstrip(b"\n")
                line = LogLine(clean_line(raw[:cap]), "scan", line_no, len(raw) > cap)
                fed.append((raw.translate(_DIGITS), line.text))
                if hit_line < 0 and end > hit:
                    hit_line = line_no
                records = feed((line,), 0.0)
                done = False
            for record in records:
                if record.first_line_no + record.line_count <= hit_line or hit_line < 0:
                    continue  # a line before the hit: it holds no candidate, so it is not an error
                candidates.append(record)  # fingerprinted later, in this order, when the search is done
            if done:
                self.memo_keys.extend(memo_key(record) for record in candidates[taken:])
                return size, line_no if data[size - 1 : size] == b"\n" else line_no - 1
            if hit_line >= 0 and records and records[-1].first_line_no + records[-1].line_count > hit_line:
                self._windows.remember(hit_index, fed, first_line_no, candidates[taken:])
                self.memo_keys.extend(memo_key(record) for record in candidates[taken:])
                return position, line_no  # the line at `position` began the next record: not consumed
            position = end
            line_no += 1


_Span = tuple[int, int, KeyLayout | None]  # a record of a window: first line, line count, memo key layout


class _Node:
    """A window memo's trie node: one per shape of the lines fed so far."""

    __slots__ = ("children", "spans")

    def __init__(self) -> None:
        self.children: dict[bytes, _Node] = {}
        self.spans: tuple[_Span, ...] | None = None  # a remembered window ends here


class _Windows:
    """Record assembly of windows already seen, by the shape of their lines: a flood of one trace is
    assembled once per shape, then only its lines are cut and joined.

    Assembly (bot.records) and line cleaning (bot.textclean) are blind to digit values: their patterns see
    digits through `\\d` and character ranges holding all ten, and lengths are kept. So two windows whose
    lines are equal once every digit is written as `1`, with the hit on the same line, are cut into the
    same records: a remembered window gives, for each record it yields, its first line and line count; its
    text is those lines joined. The layout of its memo key (bot.fingerprint_memo.key_layout, also blind to
    digit values) is kept too, so the key is cut from the text rather than found in it again. Windows whose records are anything else (a record cut to size, a line
    omitted, the end of the file) are not remembered.
    """

    def __init__(self) -> None:
        self._roots: dict[int, _Node] = {}  # by the index of the hit's line in the window
        self._count = 0

    def remember(
        self, hit_index: int, fed: list[tuple[bytes, str]], line_no: int, records: list[LogRecord]
    ) -> None:
        if self._count >= _MAX_WINDOWS or len(fed) > _MAX_WINDOW_LINES:
            return
        if sum(len(text_shape) for text_shape, _ in fed) > _MAX_WINDOW_BYTES:
            return
        spans: list[_Span] = []
        for record in records:
            first = record.first_line_no - line_no
            lines = fed[first : first + record.line_count]
            if first < 0 or len(lines) != record.line_count:
                return
            if record.text != "\n".join(text for _, text in lines) or record.at != 0.0:
                return
            spans.append((first, record.line_count, key_layout(record.text)))
        node = self._roots.setdefault(hit_index, _Node())
        for text_shape, _ in fed:
            node = node.children.setdefault(text_shape, _Node())
        if node.spans is None:
            self._count += 1
        node.spans = tuple(spans)

    def replay(self, finder: _Finder, start: int, line_no: int, hit_index: int) -> tuple[int, int] | None:
        """`finder._assemble_in_full(start, line_no, …)` from a remembered window; None when not known."""
        node = self._roots.get(hit_index)
        if node is None:
            return None
        data = finder.data
        size = len(data)
        cap = finder.max_line_bytes
        find = data.find
        starts: list[int] = []
        ends: list[int] = []  # of each line's bytes, without the newline, cut at cap + 1
        long_lines = False
        position = start
        spans = None
        while spans is None:
            if position >= size:
                return None
            newline = find(b"\n", position)
            end = size if newline < 0 else newline
            stop = position + cap + 1
            if end < stop:
                stop = end
            else:
                long_lines = True
            child = node.children.get(data[position:stop].translate(_DIGITS))
            if child is None:
                return None
            node = child
            starts.append(position)
            ends.append(stop)
            spans = node.spans
            position = end + 1
        service = finder.service
        append = finder.candidates.append
        keys = finder.memo_keys
        for first, count, layout in spans:
            last = first + count - 1
            chunk = data[starts[first] : ends[last]]
            if long_lines or b"\r" in chunk or b"\x00" in chunk or b"\x1b" in chunk:
                text = "\n".join(clean_line(data[starts[i] : ends[i]][:cap]) for i in range(first, last + 1))
            else:
                text = chunk.decode("utf-8", errors="replace")  # what clean_line makes of each line
            append(LogRecord(service, "scan", text, line_no + first, count, 0.0))
            keys.append(memo_key_by_layout(service, text, layout))  # the layout is blind to digit values
        return starts[-1], line_no + len(starts) - 1
