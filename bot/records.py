"""Multi-line record assembly: physical lines → logical records (one line, or one whole stack trace).

Joined into one record:
- a Python traceback, with its chained parts ("During handling of the above exception, …" and "The above
  exception was the direct cause of …"), caret lines (`~~^^^`) and the exception line;
- the line logged just before "Traceback (most recent call last):" (`logging.exception`'s message);
- a Java stack trace: the exception line, `\tat …` frames, `Caused by: …`, `Suppressed: …`, `... N more`,
  and the log line just before the exception line.

Per-line prefixes that process managers add to *every* line (PM2 `--time` / `--log-date-format` stamps,
`pm2 logs`' `0|app | `) are ignored when deciding whether a line continues a record.
Any other line ends the record (an interleaved access-log line, the next log line).
"""

from __future__ import annotations

import enum
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from bot.record_types import LogLine, LogRecord

MAX_RECORD_BYTES = 8 * 1024
MAX_RECORD_LINES = 200
_HEAD_SHARE = 0.5  # of an over-long record, keep this much of the start and the rest from the end
_HEAD_CAP_BYTES = int(MAX_RECORD_BYTES * _HEAD_SHARE)
_HEAD_CAP_LINES = int(MAX_RECORD_LINES * _HEAD_SHARE)
_TAIL_CAP_BYTES = MAX_RECORD_BYTES - _HEAD_CAP_BYTES - 64  # room for the omission marker
_TAIL_CAP_LINES = MAX_RECORD_LINES - _HEAD_CAP_LINES - 1

# Prefixes a process manager puts before each line of a multi-line write.
_ONE_PREFIX = (
    r"(?:"
    r"\d+\|[^|]{1,64}\|\s?"  # pm2 logs: "0|svc      | "
    r"|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?: "  # pm2 --time, docker -t
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? ?(?:Z|[+-]\d\d:?\d\d)?: "  # pm2 --log-date-format
    r")"
)
LINE_PREFIX = re.compile(r"^" + _ONE_PREFIX + "+")
_STARTS_WITH_PREFIX = re.compile(_ONE_PREFIX)  # the cheaper test first: most lines have none

PY_TRACEBACK = re.compile(r"^Traceback \(most recent call last\):\s*$")
PY_CHAIN = re.compile(
    r"^(?:During handling of the above exception, another exception occurred:"
    r"|The above exception was the direct cause of the following exception:)\s*$"
)

JAVA_FRAME = re.compile(r"^\s+at [\w$.<>/-]+\(.*\)\s*$")
JAVA_MORE = re.compile(r"^\s+\.\.\. \d+ (?:more|common frames omitted)\s*$")
JAVA_CAUSE = re.compile(r"^\s*(?:Caused by|Suppressed): \S")
JAVA_EXCEPTION_LINE = re.compile(
    r"^(?:Exception in thread \"[^\"]*\" )?(?:[a-z_$][\w$]*\.)+[A-Z][\w$]*(?:Exception|Error|Throwable)"
    r"(?::.*)?$"
)
# What a line must look like to be more than a record of its own when it comes after a single line: a
# traceback start, a Java exception line, frame or cause (`_continues` and `_start` look closer).
_MAY_JOIN = re.compile(
    "|".join(f"(?:{p.pattern})" for p in (PY_TRACEBACK, JAVA_EXCEPTION_LINE, JAVA_FRAME, JAVA_CAUSE))
)
ACCESS_LOG = re.compile(
    r"\"(?:GET|POST|PUT|DELETE|PATCH|HEAD|OPTIONS|CONNECT|TRACE) \S+ HTTP/[\d.]+\" \d{3}\b"
)


def strip_line_prefix(text: str) -> str:
    """The line without a process manager's per-line prefix (indentation after it is kept)."""
    if not text[:1].isdigit() or _STARTS_WITH_PREFIX.match(text) is None:
        return text
    match = LINE_PREFIX.match(text)
    return text[match.end() :] if match else text


class _State(enum.Enum):
    LINE = "line"  # a single line, possibly the header of a trace that follows
    PY_FRAMES = "py_frames"  # inside "Traceback …" until the exception line
    PY_AFTER = "py_after"  # after an exception line: a chain or an indented note may follow
    PY_CHAINING = "py_chaining"  # after "During handling …": waiting for the next "Traceback"
    JAVA = "java"  # inside a Java trace


@dataclass(slots=True)
class _Pending:
    first: LogLine
    at: float
    state: _State
    index: int = 0  # of `first` in the batch that brought it
    resume: str | None = None  # the source cursor at `first`, once the batch that brought it is fed
    head: list[str] = field(default_factory=list)
    tail: deque[str] = field(default_factory=deque)
    head_bytes: int = 0
    tail_bytes: int = 0
    line_count: int = 0
    omitted: int = 0
    held_blank: LogLine | None = None  # a blank line after an exception: kept only if a chain follows

    def add(self, text: str) -> None:
        self.line_count += 1
        size = (len(text) if text.isascii() else len(text.encode("utf-8", errors="replace"))) + 1
        if not self.tail and self.head_bytes + size <= _HEAD_CAP_BYTES and len(self.head) < _HEAD_CAP_LINES:
            self.head.append(text)
            self.head_bytes += size
            return
        self.tail.append(text)
        self.tail_bytes += size
        while len(self.tail) > 1 and (self.tail_bytes > _TAIL_CAP_BYTES or len(self.tail) > _TAIL_CAP_LINES):
            dropped = self.tail.popleft()
            self.tail_bytes -= len(dropped.encode("utf-8", errors="replace")) + 1
            self.omitted += 1

    def is_one_short_line(self) -> bool:
        """A single line within the head's share of the cap, no blank held after it."""
        return self.line_count == 1 and not self.tail and self.held_blank is None

    def restart(self, line: LogLine, index: int, at: float) -> None:
        """Become the pending record of `line` alone (state LINE), as a new `_Pending` would be."""
        self.first, self.at, self.state, self.index, self.resume = line, at, _State.LINE, index, None
        self.head.clear()
        self.head_bytes = self.line_count = 0
        self.add(line.text)

    def text(self) -> str:
        if len(self.head) == 1 and not self.tail:
            return self.head[0]  # a single line within the head's share of the cap
        parts = list(self.head)
        if self.omitted:
            parts.append(f"    [... {self.omitted} lines omitted ...]")  # indented: inside a trace
        parts.extend(self.tail)
        text = "\n".join(parts)
        if len(text.encode("utf-8", errors="replace")) > MAX_RECORD_BYTES:
            text = text.encode("utf-8", errors="replace")[:MAX_RECORD_BYTES].decode("utf-8", errors="ignore")
        return text


class RecordAssembler:
    """Feeds physical lines in, gets logical records out. One assembler per source, kept across polls.

    A record is only complete when the next line shows it has ended, so the last one stays pending
    until `flush()` (call it when a poll brings nothing new).

    Where the pending record began is kept as a source cursor (`resume_cursor`): the caller persists that
    one rather than the cursor past the batch, so a crash re-reads the record instead of losing it.
    `read_cursor` is the caller's: where the next read starts (it lives as long as the pending record).
    """

    def __init__(self, service: str, source: str) -> None:
        self.service = service
        self.source = source
        self._pending: _Pending | None = None
        self.read_cursor: str | None = None

    def feed(
        self,
        lines: Iterable[LogLine],
        at: float,
        *,
        resume: Callable[[int], str] | None = None,
        read_from: str | None = None,
    ) -> list[LogRecord]:
        """The records `lines` completed. `resume(i)`: the cursor at the start of line i (`SourceBatch`);
        without it a record still pending resumes at `read_from`, the cursor this batch was read from."""
        done: list[LogRecord] = []
        for index, line in enumerate(lines):
            self._feed_one(line, index, at, done)
        pending = self._pending
        if pending is not None and pending.resume is None:
            pending.resume = resume(pending.index) if resume is not None else read_from
        return done

    @property
    def has_pending(self) -> bool:
        """A record is waiting for the line that shows it has ended (a quiet poll flushes it)."""
        return self._pending is not None

    @property
    def resume_cursor(self) -> str | None:
        """The source cursor at the first line of the pending record (None: none pending, or not known)."""
        return self._pending.resume if self._pending is not None else None

    def flush(self) -> list[LogRecord]:
        done: list[LogRecord] = []
        self._finish(done)
        return done

    # --- internals ---------------------------------------------------------------------------------

    def _feed_one(self, line: LogLine, index: int, at: float, done: list[LogRecord]) -> None:
        body = strip_line_prefix(line.text)
        pending = self._pending
        if (pending is None or pending.state is _State.LINE) and _MAY_JOIN.match(body) is None:
            # The common case, decided by one search: a line that is a record of its own (so far).
            if pending is not None and pending.is_one_short_line():
                done.append(self._record(pending))
                pending.restart(line, index, at)  # a flood's lines cost no new object each
                return
            self._finish(done)
            self._pending = _Pending(first=line, at=at, state=_State.LINE, index=index)
            self._pending.add(line.text)
            return
        if pending is not None and self._continues(pending, line, body):
            return
        self._finish(done)
        self._start(line, index, body, at)

    def _start(self, line: LogLine, index: int, body: str, at: float) -> None:
        state = _State.LINE
        if PY_TRACEBACK.match(body):
            state = _State.PY_FRAMES
        elif JAVA_FRAME.match(body):
            state = _State.JAVA
        self._pending = _Pending(first=line, at=at, state=state, index=index)
        self._pending.add(line.text)

    def _continues(self, pending: _Pending, line: LogLine, body: str) -> bool:
        """Add `line` to the pending record when it belongs there; False when it starts a new one."""
        state = pending.state
        if state is _State.LINE:
            header = pending.first.text
            if PY_TRACEBACK.match(body) and header.strip() and not ACCESS_LOG.search(header):
                pending.state = _State.PY_FRAMES  # the message logging.exception wrote before it
            elif JAVA_EXCEPTION_LINE.match(body) and header.strip() and not ACCESS_LOG.search(header):
                pending.state = _State.JAVA  # a log line, then the exception line of a Java trace
            elif (JAVA_FRAME.match(body) or JAVA_CAUSE.match(body)) and _looks_like_exception(header):
                pending.state = _State.JAVA
            else:
                return False
            pending.add(line.text)
            return True
        if state is _State.PY_FRAMES:
            if body.startswith((" ", "\t")) and body.strip():
                pending.add(line.text)
                return True
            if body.strip() and not ACCESS_LOG.search(body):
                pending.state = _State.PY_AFTER  # the exception line ends the frames
                pending.add(line.text)
                return True
            return False
        if state is _State.PY_AFTER:
            if not body.strip():
                if pending.held_blank is not None:
                    return False
                pending.held_blank = line
                return True
            if PY_CHAIN.match(body):
                self._release_blank(pending)
                pending.state = _State.PY_CHAINING
                pending.add(line.text)
                return True
            if pending.held_blank is None and body.startswith((" ", "\t")):
                pending.add(line.text)  # an indented continuation of a multi-line exception message
                return True
            return False
        if state is _State.PY_CHAINING:
            if not body.strip():
                pending.add(line.text)
                return True
            if PY_TRACEBACK.match(body):
                pending.state = _State.PY_FRAMES
                pending.add(line.text)
                return True
            return False
        # Java
        if JAVA_FRAME.match(body) or JAVA_MORE.match(body) or JAVA_CAUSE.match(body):
            pending.add(line.text)
            return True
        return False

    def _release_blank(self, pending: _Pending) -> None:
        if pending.held_blank is not None:
            pending.add(pending.held_blank.text)
            pending.held_blank = None

    def _record(self, pending: _Pending) -> LogRecord:
        return LogRecord(
            self.service, self.source, pending.text(), pending.first.line_no, pending.line_count, pending.at
        )

    def _finish(self, done: list[LogRecord]) -> None:
        pending = self._pending
        self._pending = None
        if pending is None:
            return
        done.append(self._record(pending))
        if pending.held_blank is not None:
            blank = pending.held_blank
            done.append(
                LogRecord(
                    service=self.service,
                    source=self.source,
                    text=blank.text,
                    first_line_no=blank.line_no,
                    line_count=1,
                    at=pending.at,
                )
            )


def _looks_like_exception(text: str) -> bool:
    return bool(re.search(r"\b[A-Z]\w*(?:Exception|Error|Throwable)\b", text))
