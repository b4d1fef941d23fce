"""The message and level of a structured log line: a JSON object per line, or logfmt (`key=value …`).

Such a line has no header to strip: its message is a field (`msg`, `message`, …), and masking the whole
line would turn every message into `"<str>"`. What is not a structured line gives None.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MESSAGE_KEYS = ("msg", "message", "MESSAGE", "event", "log", "text", "@message")
LEVEL_KEYS = ("level", "severity", "lvl", "levelname", "log.level", "loglevel", "@level")
_LOGFMT_PAIR = re.compile(r'([\w.@-]+)=("(?:[^"\\]|\\.)*"|\S*)(?:\s+|$)')
_LOGFMT_START = re.compile(r"^[\w.@-]+=")
MIN_LOGFMT_PAIRS = 3


@dataclass(frozen=True, slots=True)
class Structured:
    message: str
    level: str | None  # as written, e.g. "info", "ERROR"


def structured(line: str) -> Structured | None:
    text = line.strip()
    if text.startswith("{") and text.endswith("}"):
        return _json(text)
    if _LOGFMT_START.match(text):
        return _logfmt(text)
    return None


def _json(text: str) -> Structured | None:
    import json  # here: most files have no JSON line, and `healbot scan` imports this module

    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    message = next((value[k] for k in MESSAGE_KEYS if isinstance(value.get(k), str)), None)
    if message is None:
        return None
    level = next((value[k] for k in LEVEL_KEYS if isinstance(value.get(k), str)), None)
    return Structured(message, level)


def _logfmt(text: str) -> Structured | None:
    pairs: dict[str, str] = {}
    at = 0
    while at < len(text):
        match = _LOGFMT_PAIR.match(text, at)
        if match is None:
            return None  # free text after the pairs: not logfmt
        value = match.group(2)
        if value.startswith('"'):
            value = value[1:-1].replace('\\"', '"')
        pairs.setdefault(match.group(1), value)
        at = match.end()
    if len(pairs) < MIN_LOGFMT_PAIRS:
        return None
    message = next((pairs[k] for k in MESSAGE_KEYS if k in pairs), None)
    if message is None:
        return None
    level = next((pairs[k] for k in LEVEL_KEYS if k in pairs), None)
    return Structured(message, level)


__all__ = ["Structured", "structured"]
