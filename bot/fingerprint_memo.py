"""Fingerprints of a flood at dictionary speed: records that differ only in their digits share one.

A flood repeats a few messages with other timestamps, pids, ids and durations. Grouping sees digits only
through character classes (`\\d`, `[0-9a-f]`, lengths such as `\\d{1,3}`) except for the literal `0` of
`0x…`, so two records whose texts are equal once every digit 1-9 is written as `1` (their *shape*) get
the same fingerprint. The exceptions are kept out of the memo:
- an access-log line (`HTTP/`): its template holds the status code, and 5xx decides whether it is an error;
- a text that may hold a secret (bot.redact's trigger pre-check, which is itself blind to digit values):
  redaction looks at digit values (card numbers by their Luhn digit, the entropy of tokens).

A Python traceback is remembered by its last traceback only (from its last "Traceback (most recent call
last):" line to its exception line, bot.grouping._python_trace): a trace's fingerprint does not look at the
line logged before it (`logging.exception`'s message, with its timestamp) nor at what follows the exception
line. Those parts are kept verbatim, frames included (their file, function and line make the key and the
frames), except the exception's message after the first `:`, which is only masked: its digits are shaped.
A record only answers from such an entry when grouping gave the entry a trace fingerprint.

The memo lives for one batch (`clear` between batches), so each shape still reaches the Grouper once per
batch and its template cluster stays recently matched. Every `CHECK_EVERY`-th hit of a shape is grouped
in full and compared; a shape whose fingerprint differed is grouped in full from then on (logged once), so
a change in grouping that makes digit values matter costs speed, not correctness.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Protocol

from bot.record_types import Fingerprint, LogRecord
from bot.records import PY_CHAIN, PY_TRACEBACK, strip_line_prefix
from bot.redact import may_hold_secret  # blind to digit values: one answer for every text of a shape

log = logging.getLogger(__name__)

CHECK_EVERY = 1024  # hits of a shape between two full groupings that check the memo
MAX_SHAPES = 4096  # per batch; a batch of more distinct shapes groups the rest in full
_SHAPE = bytes.maketrans(b"23456789", b"11111111")
_TRACEBACK = "Traceback (most recent call last):"
_MemoKey = tuple[str, bool, bytes]  # service, a Python trace's key, the shaped text
MemoKey = tuple[_MemoKey, str]  # and the text redaction would look at
_EXCEPTION_TYPE = re.compile(r"[A-Za-z_][\w.]*")  # how bot.grouping reads an exception line's type


class FingerprintSource(Protocol):
    """What the memo stands in front of (bot.grouping.Grouper)."""

    def fingerprint(self, record: LogRecord) -> Fingerprint: ...


@dataclass(slots=True)
class _Entry:
    fingerprint: Fingerprint | None  # None: this shape is grouped in full every time
    hits: int = 0


def shape(text: str) -> bytes:
    """`text` with every digit 1-9 written as 1 (`0` stays: `0x…` is hex), as bytes (the fast translate;
    "surrogatepass" keeps the encoding one-to-one)."""
    return text.encode("utf-8", "surrogatepass").translate(_SHAPE)


class FingerprintMemo:
    """`fingerprint(record)` as `grouper` gives it, computed once per shape of record text and batch."""

    def __init__(self, grouper: FingerprintSource) -> None:
        self._grouper = grouper
        self._entries: dict[_MemoKey, _Entry] = {}
        # Hashes of the shapes a check found wrong, grouped in full from then on: a collision only costs
        # speed, and the set stays small whatever the lines' length.
        self._distrusted: set[int] = set()
        self._warned = False

    def clear(self) -> None:
        self._entries.clear()

    def remembers(self, record: LogRecord) -> bool:
        """True when `fingerprint(record)` would answer from the memo (a remembered, trusted shape)."""
        entry = self._entries.get(memo_key(record)[0])
        return entry is not None and entry.fingerprint is not None

    def fingerprint(self, record: LogRecord, known_key: MemoKey | None = None) -> Fingerprint:
        """`known_key`: `memo_key(record)` if the caller has it already (bot.fastscan, while grep reads)."""
        key, redacted_text = memo_key(record) if known_key is None else known_key
        entry = self._entries.get(key)
        if entry is None:
            fp = self._grouper.fingerprint(record)
            if len(self._entries) < MAX_SHAPES:
                trusted = _memoizable(key, fp, redacted_text) and hash(key) not in self._distrusted
                self._entries[key] = _Entry(fp if trusted else None)
            return fp
        known = entry.fingerprint
        if known is None:
            return self._grouper.fingerprint(record)
        entry.hits += 1
        if entry.hits % CHECK_EVERY:
            return known
        fp = self._grouper.fingerprint(record)
        if fp.key != known.key or fp.is_error != known.is_error:
            entry.fingerprint = None
            if len(self._distrusted) < MAX_SHAPES:
                self._distrusted.add(hash(key))
            if not self._warned:
                self._warned = True
                log.warning(
                    "grouping told two records of one shape apart (%r, %r): such records are grouped one by"
                    " one from now on",
                    known.template[:80],
                    fp.template[:80],
                )
        return fp


def memo_key(record: LogRecord) -> MemoKey:
    """What the memo remembers `record` by: its last Python traceback (see the module's doc) when it has
    one, else the shape of its text; and the text whose digit values redaction may look at."""
    return memo_key_by_layout(record.service, record.text, key_layout(record.text))


# Where the parts of a trace's memo key lie in its text: the index of its last traceback start line, the
# length of each line's process manager prefix from there to its exception line, the exception line's
# index (-1: none), where the first colon is in it after its prefix (-1: none), and whether what precedes
# that colon is an exception type. Finding them is blind to digit values (bot.fastscan reuses the layout
# of one text for every text of its digit shape); None: not a Python trace.
KeyLayout = tuple[int, tuple[int, ...], int, int, bool]


def key_layout(text: str) -> KeyLayout | None:
    if _TRACEBACK not in text:
        return None
    lines = text.split("\n")
    at = text.rfind(_TRACEBACK)
    start = text.count("\n", 0, at)  # the line holding the last one
    if PY_TRACEBACK.match(strip_line_prefix(lines[start])) is None:  # that line is no start: look further up
        found = next(
            (i for i in range(start - 1, -1, -1) if PY_TRACEBACK.match(strip_line_prefix(lines[i]))), None
        )
        if found is None:
            return None
        start = found
    prefixes: list[int] = []
    for index in range(start, len(lines)):
        raw = lines[index]
        line = strip_line_prefix(raw)
        prefixes.append(len(raw) - len(line))
        if index > start and line.strip() and not line[:1].isspace() and PY_CHAIN.match(line) is None:
            colon = line.find(":")  # the exception type cannot hold a colon
            typed = _EXCEPTION_TYPE.fullmatch(line if colon < 0 else line[:colon]) is not None
            return start, tuple(prefixes), index, colon, typed
    return start, tuple(prefixes), -1, -1, False


def memo_key_by_layout(service: str, text: str, layout: KeyLayout | None) -> MemoKey:
    """`memo_key` of a record of `service` and `text`, given `key_layout(text)` or that of a text of the same
    digit shape. A trace's key: its lines from the last traceback start to the exception line, each without
    its prefix, the message after the exception line's first colon shaped; and the (shaped) text its
    template redacts: that message, or the whole exception line when it does not start with a type."""
    if layout is None:
        text_shape = shape(text)
        return (service, False, text_shape), text_shape.decode("utf-8", "surrogatepass")
    start, prefixes, exception, colon, typed = layout
    if exception >= 0 and not any(prefixes):  # no process manager prefix: the lines kept are one slice
        first = _line_start(text, 0, start)
        at = _line_start(text, first, exception - start)
        newline = text.find("\n", at)
        line_end = len(text) if newline < 0 else newline
        head_end = line_end if colon < 0 else at + colon + 1
        message_shape = shape(text[head_end:line_end])
        key = text[first:head_end].encode("utf-8", "surrogatepass") + message_shape
        shown = message_shape.decode("utf-8", "surrogatepass")
        return (service, True, key), shown if typed else text[at:head_end] + shown
    return _trace_key_by_lines(service, text, layout)


def _line_start(text: str, at: int, lines: int) -> int:
    """Where the line `lines` lines after the one starting at `at` starts."""
    for _ in range(lines):
        at = text.index("\n", at) + 1
    return at


def _trace_key_by_lines(service: str, text: str, layout: KeyLayout) -> MemoKey:
    """`memo_key_by_layout` of a trace, its lines cut one by one."""
    start, prefixes, exception, colon, typed = layout
    lines = text.split("\n")
    if exception < 0:  # no exception line: no message
        kept = "\n".join(lines[start + i][cut:] for i, cut in enumerate(prefixes))
        return (service, True, kept.encode("utf-8", "surrogatepass")), ""
    kept = "\n".join(lines[start + i][cut:] for i, cut in enumerate(prefixes[:-1]))
    line = lines[exception][prefixes[-1] :]
    head, message = (line, "") if colon < 0 else (line[: colon + 1], line[colon + 1 :])
    message_shape = shape(message)
    key = (kept + "\n" + head).encode("utf-8", "surrogatepass") + message_shape
    shown = message_shape.decode("utf-8", "surrogatepass")
    return (service, True, key), shown if typed else head + shown


def _memoizable(key: _MemoKey, fp: Fingerprint, redacted_text: str) -> bool:
    if may_hold_secret(redacted_text):
        return False
    if key[1]:  # answered from the trace alone only when grouping made a trace fingerprint of it
        return fp.exception_type is not None or bool(fp.frames)
    if fp.exception_type is not None or fp.frames:
        return False  # a Java trace: its frames' line numbers and any digit in a name make the fingerprint
    return b"HTTP/" not in key[2]
