"""Tail a plain log file by cursor: inode + first-line hash + byte offset (after fail2ban's `logs` table).

The cursor survives rotation by rename-and-create (the rest of the renamed file is finished when it is
still next to the new one, then the new file is read from 0), copytruncate and truncation (the file is
shorter than the offset, or its first line changed: read again from 0). Lines are read in binary blocks;
a line longer than `max_line_bytes` is emitted capped and the rest of it is skipped, even across reads,
so memory stays bounded by the cap whatever the file holds. A poll reads at most `POLL_MAX_BYTES` (a flood
is read over several polls, at bounded memory). When the inode is the same and the size equals the
offset there is nothing to read, and the idle poll stops at one fstat (a truncation refilled to exactly
the old size is noticed at the next append, when the first-line hash is checked again).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from bot.errors import SourceError
from bot.models import LogLine, SourceBatch
from bot.textclean import clean_line, clean_text

__all__ = ["FileSource", "clean_line", "clean_text"]

DEFAULT_MAX_BYTES = 4 * 1024 * 1024  # per block when a whole file is read (`healbot scan`)
POLL_MAX_BYTES = 1024 * 1024  # per poll: bounds the memory a flood costs; the next poll reads on
BLOCK_SIZE = 64 * 1024
HEAD_BYTES = 1024  # the "first line" hashed for the cursor is at most this long


@dataclass(frozen=True, slots=True)
class FileCursor:
    inode: int
    head_len: int  # bytes of the first line that were hashed
    head_sha256: str
    offset: int
    lines: int = 0  # complete lines before `offset` since the cursor started (at 0 or at the end)
    skipping: bool = False  # inside an over-long line whose capped head was already emitted

    def dump(self) -> str:
        return json.dumps(
            {
                "inode": self.inode,
                "head_len": self.head_len,
                "head_sha256": self.head_sha256,
                "offset": self.offset,
                "lines": self.lines,
                "skipping": self.skipping,
            },
            sort_keys=True,
        )

    @classmethod
    def load(cls, text: str) -> FileCursor:
        try:
            data = json.loads(text)
            cursor = cls(
                inode=data["inode"],
                head_len=data["head_len"],
                head_sha256=data["head_sha256"],
                offset=data["offset"],
                lines=data.get("lines", 0),
                skipping=data.get("skipping", False),
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise SourceError(f"invalid file cursor {text[:200]!r}: {exc}") from None
        ints = (cursor.inode, cursor.head_len, cursor.offset, cursor.lines)
        if (
            not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints)
            or not isinstance(cursor.head_sha256, str)
            or not isinstance(cursor.skipping, bool)
        ):
            raise SourceError(f"invalid file cursor {text[:200]!r}: fields have wrong types or values")
        return cursor


def _head(fh: BinaryIO, length: int | None = None) -> tuple[int, str]:
    """(length, sha256) of the file's first line (newline included), or of its first `length` bytes."""
    fh.seek(0)
    data = fh.read(HEAD_BYTES if length is None else length)
    if length is None:
        newline = data.find(b"\n")
        if newline >= 0:
            data = data[: newline + 1]
    return len(data), hashlib.sha256(data).hexdigest()


def _same_file(fh: BinaryIO, cursor: FileCursor) -> bool:
    """True when the file still starts with the bytes the cursor hashed and is long enough."""
    if os.fstat(fh.fileno()).st_size < cursor.offset:
        return False
    length, digest = _head(fh, cursor.head_len)
    return length == cursor.head_len and digest == cursor.head_sha256


def _open(path: Path) -> BinaryIO:
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        raise SourceError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise SourceError(f"{path}: is a directory, not a log file") from None
    except PermissionError:
        raise SourceError(f"{path}: permission denied (the bot's user cannot read it)") from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot be opened: {exc.strerror or exc}") from None
    if not path.is_file():
        fh.close()
        raise SourceError(f"{path}: is not a regular file")
    return fh


class _LineReader:
    """Splits a binary stream into capped lines from a cursor; stops at a line boundary once over budget."""

    def __init__(self, fh: BinaryIO, source: str, max_line_bytes: int) -> None:
        self.fh = fh
        self.source = source
        self.max_line_bytes = max_line_bytes

    def read(self, cursor: FileCursor, max_bytes: int) -> tuple[list[LogLine], list[int], FileCursor]:
        """The lines, the byte offset each one starts at, and the cursor after them."""
        if not cursor.skipping:
            fast = self._read_whole_lines(cursor, max_bytes)
            if fast is not None:
                return fast
        self.fh.seek(cursor.offset)
        lines: list[LogLine] = []
        starts: list[int] = []
        offset = cursor.offset  # start of the current (unfinished) line
        line_count = cursor.lines
        skipping = cursor.skipping
        pending = bytearray()  # the current line's bytes, at most max_line_bytes
        pending_full = False  # pending reached the cap; the rest of the line is being skipped
        position = cursor.offset
        while True:
            over_budget = position - cursor.offset >= max_bytes
            if over_budget and (pending_full or not pending):
                break  # at a line boundary, or inside a capped line whose state the cursor can carry
            block = self.fh.read(BLOCK_SIZE)
            if not block:
                break
            start = 0
            while start < len(block):
                newline = block.find(b"\n", start)
                end = len(block) if newline < 0 else newline
                if not skipping and not pending_full:
                    room = self.max_line_bytes - len(pending)
                    pending += block[start : min(end, start + room)]
                    if end - start > room:
                        pending_full = True
                if newline < 0:
                    position += len(block) - start
                    break
                position += newline + 1 - start
                start = newline + 1
                if skipping:
                    skipping = False  # the tail of a line capped by an earlier read ends here
                else:
                    line_count += 1
                    lines.append(self.line(pending, line_count, truncated=pending_full))
                    starts.append(offset)
                pending.clear()
                pending_full = False
                offset = position
                if position - cursor.offset >= max_bytes:
                    break
            if position - cursor.offset >= max_bytes and not pending:
                break
        if pending_full:
            # A partial line already longer than the cap: emit it now and skip the rest when it comes.
            line_count += 1
            lines.append(self.line(pending, line_count, truncated=True))
            starts.append(offset)
            offset = position
            skipping = True
        elif skipping:
            offset = position  # the skipped tail is consumed; its newline has not come yet
        return lines, starts, replace(cursor, offset=offset, lines=line_count, skipping=skipping)

    def _read_whole_lines(
        self, cursor: FileCursor, max_bytes: int
    ) -> tuple[list[LogLine], list[int], FileCursor] | None:
        """`read` for the common case, at buffer speed: the budget's bytes (and the rest of the line they
        end in) hold whole lines, none over the cap. None when they do not; `read` goes line by line then."""
        fh = self.fh
        fh.seek(cursor.offset)
        data = fh.read(min(BLOCK_SIZE, max_bytes))
        if b"\n" not in data:
            return None  # a long line, maybe very long: line by line, at bounded memory
        data += fh.read(max_bytes - len(data))
        if len(data) == max_bytes and not data.endswith(b"\n"):
            rest = fh.read(self.max_line_bytes + 1)  # the line the budget ends in, when it ends soon
            newline = rest.find(b"\n")
            if newline < 0:
                return None
            data += rest[: newline + 1]
        end = data.rfind(b"\n") + 1
        cap = self.max_line_bytes
        if end == 0 or len(data) - end > cap:
            return None
        raws = data[: end - 1].split(b"\n")
        if max(map(len, raws)) > cap:
            return None
        first_no = cursor.lines + 1
        source = self.source
        lines = [LogLine(clean_line(raw), source, no) for no, raw in enumerate(raws, first_no)]
        starts = list(itertools.accumulate((len(raw) + 1 for raw in raws[:-1]), initial=cursor.offset))
        return lines, starts, replace(cursor, offset=cursor.offset + end, lines=cursor.lines + len(raws))

    def remainder(self, cursor: FileCursor) -> LogLine | None:
        """The unterminated last line after `cursor`, when nothing more will be appended to it."""
        if cursor.skipping:
            return None
        self.fh.seek(cursor.offset)
        data = self.fh.read(self.max_line_bytes + 1)
        if not data or b"\n" in data:
            return None
        truncated = len(data) > self.max_line_bytes
        return self.line(data[: self.max_line_bytes], cursor.lines + 1, truncated=truncated)

    def line(self, raw: bytearray | bytes, line_no: int, *, truncated: bool) -> LogLine:
        return LogLine(text=clean_line(bytes(raw)), source=self.source, line_no=line_no, truncated=truncated)


@dataclass(frozen=True, slots=True)
class _Segment:
    """The lines a batch read from one file: `after` is the cursor past them (that file's inode and head)."""

    after: FileCursor
    first_index: int  # of the segment's first line in the batch
    starts: tuple[int, ...]  # byte offset where each line starts
    lines_before: tuple[int, ...]  # complete lines before each one (the cursor's `lines`)


def _lines_before(lines: list[LogLine]) -> tuple[int, ...]:
    return tuple(line.line_no - 1 for line in lines)


@dataclass(frozen=True, slots=True)
class _ResumeAt:
    """`SourceBatch.resume` of a file batch: the cursor at the start of its line `index`."""

    segments: tuple[_Segment, ...]

    def __call__(self, index: int) -> str:
        for segment in reversed(self.segments):
            if index >= segment.first_index:
                i = index - segment.first_index
                return replace(
                    segment.after, offset=segment.starts[i], lines=segment.lines_before[i], skipping=False
                ).dump()
        raise IndexError(f"no line {index} in this batch")


def _batch(lines: list[LogLine], cursor: FileCursor, segments: list[_Segment]) -> SourceBatch:
    return SourceBatch(lines=tuple(lines), cursor=cursor.dump(), resume=_ResumeAt(tuple(segments)))


class FileSource:
    """A LogSource over one plain file. Stateless between calls: the caller persists the cursor."""

    def __init__(self, service: str, path: Path, *, max_line_bytes: int = 8192) -> None:
        if max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be at least 1, not {max_line_bytes}")
        self.service = service
        self.path = Path(path)
        self.max_line_bytes = max_line_bytes
        self.source_id = f"file:{self.path}"

    def start_cursor(self) -> str:
        """A cursor at the very beginning of the current file (for `healbot scan` and replays)."""
        with _open(self.path) as fh:
            return self._fresh(fh).dump()

    def nothing_new(self, cursor: str | None) -> bool:
        """True when a read after `cursor` would return nothing: one stat, cheap enough to call on the event
        loop before handing the read to a thread. Any doubt (no cursor, error, rotation) says False."""
        if cursor is None:
            return False
        try:
            state = FileCursor.load(cursor)
            stat = os.stat(self.path)
        except (SourceError, OSError):
            return False
        return stat.st_ino == state.inode and stat.st_size == state.offset and not state.skipping

    def read(self, cursor: str | None, max_bytes: int = POLL_MAX_BYTES) -> SourceBatch:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, not {max_bytes}")
        try:
            return self._read(cursor, max_bytes)
        except OSError as exc:
            raise SourceError(f"{self.path}: read failed: {exc.strerror or exc}") from None

    def iter_lines(
        self, cursor: str | None = None, block_bytes: int = DEFAULT_MAX_BYTES
    ) -> Iterator[LogLine]:
        """Every line from `cursor` (default: the start) to the current end, read batch by batch.

        Unlike `read`, an unterminated last line is included: the caller reads the file as it is now.
        """
        current = cursor if cursor is not None else self.start_cursor()
        while True:
            batch = self.read(current, block_bytes)
            yield from batch.lines
            if batch.cursor == current:
                break
            current = batch.cursor
        with _open(self.path) as fh:
            last = _LineReader(fh, self.source_id, self.max_line_bytes).remainder(FileCursor.load(current))
        if last is not None:
            yield last

    # --- internals ---------------------------------------------------------------------------------

    def _read(self, cursor_text: str | None, max_bytes: int) -> SourceBatch:
        with _open(self.path) as fh:
            if cursor_text is None:
                return SourceBatch(lines=(), cursor=self._at_end(fh).dump())
            cursor = FileCursor.load(cursor_text)
            stat = os.fstat(fh.fileno())
            inode = stat.st_ino
            if inode == cursor.inode and stat.st_size == cursor.offset and not cursor.skipping:
                return SourceBatch(lines=(), cursor=cursor_text)  # nothing new: the idle poll's fast path
            lines: list[LogLine] = []
            segments: list[_Segment] = []
            if inode != cursor.inode:
                rotated_lines, rotated_starts, rotated_cursor, done = self._finish_rotated(cursor, max_bytes)
                segments.append(
                    _Segment(rotated_cursor, 0, tuple(rotated_starts), _lines_before(rotated_lines))
                )
                lines.extend(rotated_lines)
                if not done:
                    return _batch(lines, rotated_cursor, segments)
                cursor = self._fresh(fh)
            elif not _same_file(fh, cursor):
                cursor = self._fresh(fh)  # truncated or copytruncated: start over
            reader = _LineReader(fh, self.source_id, self.max_line_bytes)
            new_lines, starts, cursor = reader.read(cursor, max_bytes)
            if cursor.head_len < HEAD_BYTES:
                head_len, head = _head(fh)
                if head_len >= cursor.head_len:
                    cursor = replace(cursor, head_len=head_len, head_sha256=head)
            segments.append(_Segment(cursor, len(lines), tuple(starts), _lines_before(new_lines)))
            lines.extend(new_lines)
            return _batch(lines, cursor, segments)

    def _fresh(self, fh: BinaryIO) -> FileCursor:
        head_len, head = _head(fh)
        return FileCursor(inode=os.fstat(fh.fileno()).st_ino, head_len=head_len, head_sha256=head, offset=0)

    def _at_end(self, fh: BinaryIO) -> FileCursor:
        """Cursor after the last complete line, so a line being written now is read whole later."""
        size = os.fstat(fh.fileno()).st_size
        tail_start = max(0, size - self.max_line_bytes)
        fh.seek(tail_start)
        tail = fh.read(size - tail_start)
        newline = tail.rfind(b"\n")
        if newline >= 0:
            offset = tail_start + newline + 1
        elif size > self.max_line_bytes:
            offset = size  # a partial line already over the cap: never read its head
        else:
            offset = 0
        return replace(self._fresh(fh), offset=offset)

    def _finish_rotated(
        self, cursor: FileCursor, max_bytes: int
    ) -> tuple[list[LogLine], list[int], FileCursor, bool]:
        """Read what is left of the renamed file (same inode next to the new one, e.g. app.log.1).

        Returns the lines, where each starts, the cursor after them on the old file, and whether the old
        file is done (or gone): then the new file is read next.
        """
        rotated = self._find_inode(cursor.inode)
        if rotated is None:
            return [], [], cursor, True
        try:
            with rotated.open("rb") as old:
                if not _same_file(old, cursor):
                    return [], [], cursor, True
                reader = _LineReader(old, self.source_id, self.max_line_bytes)
                lines, starts, after = reader.read(cursor, max_bytes)
                if after.offset - cursor.offset >= max_bytes:
                    return lines, starts, after, False  # budget spent; the rest next time
                last = reader.remainder(after)  # the writer has moved on: its last line stays unterminated
        except OSError:
            return [], [], cursor, True
        if last is not None:
            lines.append(last)
            starts.append(after.offset)
        return lines, starts, after, True  # continue with the new file, whose line numbers start again at 1

    def _find_inode(self, inode: int) -> Path | None:
        try:
            entries = list(os.scandir(self.path.parent))
        except OSError:
            return None
        for entry in entries:
            if entry.name.startswith(self.path.name) and entry.name != self.path.name:
                try:
                    if entry.is_file() and entry.inode() == inode:
                        return Path(entry.path)
                except OSError:
                    continue
        return None
