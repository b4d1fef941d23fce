"""One physical log line made safe to handle: invalid UTF-8 replaced, trailing CR, NULs and ANSI removed.

Kept apart from the sources so `healbot scan` can use it without importing them.
"""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?")


def clean_line(raw: bytes) -> str:
    """Decode one physical line (without its newline): invalid UTF-8 replaced, NULs and ANSI removed."""
    return clean_text(raw.decode("utf-8", errors="replace"))


def clean_text(text: str) -> str:
    """One decoded line without its newline: trailing CR, NULs and ANSI escapes removed."""
    if text.endswith("\r"):
        text = text[:-1]
    if "\x00" in text:
        text = text.replace("\x00", "")
    if "\x1b" in text:
        text = _ANSI.sub("", text)
    return text
