"""Lines, records and fingerprints: the part of bot.models that `healbot scan` needs, kept apart so a scan
does not build every dataclass of bot.models (about 30 ms); bot.models re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LogLine:
    """One physical line read from a source, decoded and capped."""

    text: str
    source: str  # source id, e.g. "file:/var/log/app.log"
    line_no: int = 0  # 1-based within what the source has read, for `healbot scan`
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One logical record: a line, or a multi-line traceback joined with "\n"."""

    service: str
    source: str
    text: str
    first_line_no: int = 0
    line_count: int = 1
    at: float = 0.0  # unix time the record was read


@dataclass(frozen=True, slots=True)
class Frame:
    path: str
    line: int
    function: str


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What makes two records the same problem."""

    key: str  # short stable hash: service + exception type + innermost frames, or masked template
    service: str
    is_error: bool
    exception_type: str | None
    template: str  # masked, human-readable summary line
    frames: tuple[Frame, ...] = ()
