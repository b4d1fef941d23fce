"""Operator logs: plain text or one JSON object per line, always redacted, with service and incident ids.

Code logs with `extra={"service": name, "incident": id}` where it knows them; both formats show them.
Every message (and traceback) passes `redact` and the environment-value scrubber before it is written, so
a token that reaches a log call never reaches the journal.
"""

from __future__ import annotations

import enum
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import TextIO

from bot.redact import scrubber

CONTEXT_FIELDS = ("service", "incident", "source", "change")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_HANDLER_NAME = "healbot"


class LogFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"


def _context(record: logging.LogRecord) -> dict[str, object]:
    return {name: getattr(record, name) for name in CONTEXT_FIELDS if getattr(record, name, None) is not None}


class RedactingTextFormatter(logging.Formatter):
    def __init__(self, scrub: Callable[[str], str]) -> None:
        super().__init__(TEXT_FORMAT)
        self._scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = _context(record)
        if context:
            first, newline, rest = text.partition("\n")
            tags = " ".join(f"{k}={v}" for k, v in context.items())
            text = f"{first} [{tags}]{newline}{rest}"
        return self._scrub(text)


class JsonFormatter(logging.Formatter):
    """One line per record: ts (ISO 8601 UTC), level, logger, message, context ids, exception text."""

    def __init__(self, scrub: Callable[[str], str]) -> None:
        super().__init__()
        self._scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": self._scrub(record.getMessage()),
        }
        entry.update(_context(record))
        if record.exc_info:
            entry["exception"] = self._scrub(self.formatException(record.exc_info))
        import json  # here: only the JSON format needs it, and `healbot scan` logs text

        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(
    fmt: LogFormat,
    *,
    level: int | None = None,
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> logging.Handler:
    """Install (or replace) healbot's handler on the root logger. `level=None` keeps the current level."""
    scrub = scrubber(os.environ if environ is None else environ)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter(scrub) if fmt is LogFormat.JSON else RedactingTextFormatter(scrub))
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == _HANDLER_NAME or _is_default_stderr(old):
            root.removeHandler(old)
    root.addHandler(handler)
    if level is not None:
        root.setLevel(level)
    return handler


def _is_default_stderr(handler: logging.Handler) -> bool:
    """The handler `logging.basicConfig` installed (healbot's own is replaced by name)."""
    return type(handler) is logging.StreamHandler and getattr(handler, "stream", None) in (sys.stderr, None)
