"""The header of one log file, learned from its first lines: which leading fields vary line to line.

A log format puts the same kinds of fields first on every line (a timestamp, a counter, a pid, a host, a
level, a `[thread]`), then the message. Across a sample of lines, a header column keeps one *shape*
(letters → `a`, digits → `d`, other characters kept: `2015-07-29` → `d-d-d`) while the message's columns
do not, as different events start with different words. A column is *anchoring* when most sample lines
share its shape and that shape holds a digit (it varies: stamps, counters, pids), or its values are
level words, or it is one constant run of punctuation (`-`, `|`): separators. A column holding one value
on most lines does not anchor otherwise (a host, or the value of an event that fills the head). The header runs to the last
anchoring column, with at most `max_gap` other columns between anchors (hosts, program names).

Fields are runs of non-blank characters; a balanced `[...]` group is one field (`[Sun Dec 04 04:47:44
2005]`), and `|` separates fields like a blank (`stamp|component|pid|message`). A line whose anchoring
columns do not have the learned shape (a continuation, another format mixed in) is not cut: the caller
falls back to its per-line stripping.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bot.masking import LEVELS
from bot.records import strip_line_prefix
from bot.textclean import clean_line

DEFAULT_SHARE = 0.9  # share of sample lines a column's shape must hold to anchor the header
DEFAULT_MAX_GAP = 2  # non-anchoring columns allowed between two anchoring ones
MAX_COLUMNS = 12  # header columns looked at
MAX_SLACK = 2  # extra fields a non-anchoring header column may take on one line
MIN_SAMPLE = 20  # fewer sample lines than this learn nothing
SAMPLE_LINES = 200  # lines of a file's head a model is learned from
HEAD_BYTES = 256 * 1024  # at most this much of a file's head is read for them

_FIELD = re.compile(r"\[(?:[^\[\]]|\[[^\[\]]*\])*\]|[^\s|\[]+(?:\[[^\]\s]*\][^\s|\[]*)*|\[")
_SEPARATOR = re.compile(r"[\s|]*")
_SHAPE = re.compile(r"[A-Za-z]+|\d+")
_PUNCTUATION = re.compile(r"^[^\w\s]+$")
# Level words as they appear in headers: any case, bracketed, single letters (logcat, glog: `E`, `W`).
_LEVEL_LETTERS = {"V": "TRACE", "D": "DEBUG", "I": "INFO", "W": "WARN", "E": "ERROR", "F": "FATAL"}
# Three-letter forms (zerolog, Serilog, Go's slog handlers): `DBG`, `INF`, `WRN`, `FTL`.
_LEVEL_ABBREVIATIONS = {
    "TRC": "TRACE",
    "DBG": "DEBUG",
    "INF": "INFO",
    "WRN": "WARN",
    "FTL": "FATAL",
    "CRT": "CRITICAL",
}
_LEVEL_SPELLINGS = {
    "VERBOSE": "TRACE",
    "ERRO": "ERROR",
    "INFORMATION": "INFO",
    **_LEVEL_ABBREVIATIONS,
    **_LEVEL_LETTERS,
}
_LEVEL_WORDS = frozenset(LEVELS) | frozenset(_LEVEL_SPELLINGS)


def fields(line: str, limit: int = MAX_COLUMNS) -> list[tuple[str, int]]:
    """The first `limit` header fields of `line`, each with the offset where it ends."""
    found: list[tuple[str, int]] = []
    at = _SEPARATOR.match(line).end()  # type: ignore[union-attr]  # matches the empty string anywhere
    while at < len(line) and len(found) < limit:
        match = _FIELD.match(line, at)
        if match is None:
            break
        found.append((match.group(0), match.end()))
        at = _SEPARATOR.match(line, match.end()).end()  # type: ignore[union-attr]
    return found


def shape(field: str) -> str:
    if field.startswith("[") and field.endswith("]") and len(field) > 2:
        return "[d]" if any(c.isdigit() for c in field) else "[a]"
    return _SHAPE.sub(lambda m: "d" if m.group(0)[0].isdigit() else "a", field)


def is_level(field: str) -> bool:
    return field.strip("[]<>():,").upper() in _LEVEL_WORDS


@dataclass(frozen=True, slots=True)
class HeaderModel:
    """How many leading fields are header, and the shape each anchoring one must have (None: any)."""

    shapes: tuple[str | None, ...]
    _pattern: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.shapes:
            object.__setattr__(self, "_pattern", _compile(self.shapes))

    @property
    def length(self) -> int:
        return len(self.shapes)

    @property
    def ends_with_level(self) -> bool:
        return bool(self.shapes) and self.shapes[-1] == _LEVEL_SHAPE

    def cut(self, line: str) -> str | None:
        """`line` without its header fields; None when the line does not fit the learned header.

        A column that does not anchor may take up to MAX_SLACK more fields on one line (`chrome.exe *64`
        where most lines have `chrome.exe`) when the next anchoring column fits only after them."""
        found = self.split(line)
        return found[0] if found is not None else None

    def split(self, line: str) -> tuple[str, str | None] | None:
        """`cut(line)` and the level word of its level column, upper-cased without brackets (None when the
        header has no level column); None when the line does not fit."""
        if self._pattern is None:
            return None
        match = self._pattern.match(line)
        if match is None:
            return None
        message = line[match.end() :].lstrip(" \t|")
        if not message:
            return None
        level = match.group("level") if "level" in self._pattern.groupindex else None
        return message, (_LEVEL_SPELLINGS.get(level.upper(), level.upper()) if level else None)


_FIELD_RE = r"(?:\[(?:[^\[\]]|\[[^\[\]]*\])*\]|[^\s|\[]+(?:\[[^\]\s]*\][^\s|\[]*)*)"
_END = r"(?=[\s|]|$)"
_SHAPE_PART = {"a": "[A-Za-z]+", "d": r"\d+"}


def _compile(shapes: tuple[str | None, ...]) -> re.Pattern[str]:
    """One regex for the header: each anchoring column by its shape, each other column any field (with
    up to MAX_SLACK more, as few as the next anchor allows), blanks or `|` between them."""
    parts: list[str] = []
    named = False
    for expected in shapes:
        if expected is None:
            parts.append(_FIELD_RE + rf"(?:[\s|]+{_FIELD_RE}){{0,{MAX_SLACK}}}?" + _END)
        elif expected == _LEVEL_SHAPE:
            words = "|".join(sorted(_LEVEL_WORDS, key=len, reverse=True))
            word = rf"(?P<level>{words})" if not named else rf"(?:{words})"
            named = True
            parts.append(rf"[\[\]<>():,]*(?i:{word})[\[\]<>():,]*" + _END)
        elif expected == "[d]":
            parts.append(r"\[(?=[^\]]*\d)(?:[^\[\]]|\[[^\[\]]*\])*\]" + _END)
        elif expected == _DIGIT_SHAPE:
            parts.append(r"(?=[^\s|]*?\d)" + _FIELD_RE + _END)
        elif expected == _NAME_SHAPE:
            parts.append(_FIELD_RE + r"(?<=:)" + _END)
        elif expected == _BRACKET_SHAPE:
            parts.append(r"\[(?:[^\[\]]|\[[^\[\]]*\])*\]" + _END)
        else:
            parts.append("".join(_SHAPE_PART.get(c, re.escape(c)) for c in expected) + _END)
    return re.compile(r"[\s|]*" + r"[\s|]+".join(parts))


_LEVEL_SHAPE = "<level>"
# a bracketed group of any content: `[main]`, `[pool-1-thread-3]`, `[req-… - -]`, `[-]`
_BRACKET_SHAPE = "[*]"
# any field with a digit in it
_DIGIT_SHAPE = "<digit>"
# any field that ends with a colon: `kernel:`, `CacheManager:`, `app[12]:`
_NAME_SHAPE = "<name>:"
NO_HEADER = HeaderModel(())


def learn(
    lines: Iterable[str], *, share: float = DEFAULT_SHARE, max_gap: int = DEFAULT_MAX_GAP
) -> HeaderModel:
    """The header model of a file whose first lines are `lines`; NO_HEADER when there are too few of them
    or no column anchors."""
    columns: list[list[str]] = [[] for _ in range(MAX_COLUMNS)]
    sample = 0
    for line in lines:
        if not line.strip() or line[:1].isspace():
            continue  # blank lines and indented continuations say nothing about the header
        sample += 1
        for i, (value, _end) in enumerate(fields(line)):
            columns[i].append(value)
    if sample < MIN_SAMPLE:
        return NO_HEADER
    anchors: list[str | None] = []
    for i, values in enumerate(columns):
        followed = len(columns[i + 1]) if i + 1 < MAX_COLUMNS else 0
        # a header is followed by a message: the last field of most lines is message, whatever its shape
        anchors.append(_anchor(values, sample, share) if followed >= share * sample else None)
    end = -1
    gap = 0
    for i, anchor in enumerate(anchors):
        if anchor is not None:
            end, gap = i, 0
        else:
            gap += 1
            if gap > max_gap:
                break
    if end >= 0 and anchors[end] == _NAME_SHAPE:
        # the name shows where the header ends, but it names what logged the event: it stays in the message
        return HeaderModel(tuple(anchors[:end]))
    return HeaderModel(tuple(anchors[: end + 1]))


def head_lines(path: Path, limit: int = SAMPLE_LINES) -> list[str]:
    """The first `limit` whole lines of `path` (within HEAD_BYTES), cleaned and without process manager
    prefixes; [] when it cannot be read."""
    try:
        with path.open("rb") as fh:
            head = fh.read(HEAD_BYTES)
    except OSError:
        return []
    lines = head.split(b"\n")
    if len(head) == HEAD_BYTES:
        lines.pop()  # cut in the middle
    return [strip_line_prefix(clean_line(raw)) for raw in lines[:limit]]


def _anchor(values: list[str], sample: int, share: float) -> str | None:
    """The shape an anchoring column must have (`_LEVEL_SHAPE` for levels), None when it does not anchor."""
    if len(values) < share * sample:
        return None
    if sum(1 for v in values if is_level(v)) >= share * len(values):
        return _LEVEL_SHAPE
    shapes = Counter(shape(v) for v in values)
    modal, count = shapes.most_common(1)[0]
    constant, times = Counter(values).most_common(1)[0]
    if times >= share * sample:
        # One value on most lines: a separator anchors; anything else (a host, or the value of the event
        # that fills the head) may as well stay in the message, where a constant changes no grouping.
        return modal if _PUNCTUATION.match(constant) else None
    if sum(1 for v in values if len(v) > 1 and v.endswith(":")) >= share * sample:
        # `name:` on nearly every line: a program or component, what comes before it is header
        return _NAME_SHAPE
    if shapes["[d]"] + shapes["[a]"] >= share * sample:
        # bracketed groups that vary (thread names, request ids with or without digits, `[-]`) are header:
        # a message does not open with a bracket on nearly every line
        return _BRACKET_SHAPE
    if count < share * sample:
        if sum(1 for v in values if any(c.isdigit() for c in v)) >= share * sample:
            # values of several shapes, nearly all with a digit: names of nodes or hosts (`node-12`,
            # `R12-M1-N3`), ids; a message does not hold a number in the same place on nearly every line
            return _DIGIT_SHAPE
        return None
    return modal if "d" in modal else None


__all__ = [
    "DEFAULT_MAX_GAP",
    "DEFAULT_SHARE",
    "NO_HEADER",
    "SAMPLE_LINES",
    "HeaderModel",
    "fields",
    "head_lines",
    "learn",
    "shape",
]
