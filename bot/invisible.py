"""Characters a reader cannot see, made visible before a person approves what they read.

A diff can look harmless and compile to something else: bidirectional controls reorder what is shown
(Trojan Source, CVE-2021-42574), zero-width and other format characters hide inside identifiers and
strings, and odd spaces or control characters pass for plain blanks. Every card and console view of a
fix shows each such character as `⟦U+202E⟧` and says how many there are; the diff itself is unchanged.
"""

from __future__ import annotations

import re

# Unicode general category Cf (format), all of it; C0/C1 controls but tab, newline and carriage return;
# spaces other than U+0020 (Zs); and the blank "letters" (Hangul fillers, the braille blank).
_HIDDEN_RANGES: tuple[tuple[int, int], ...] = (
    (0x0000, 0x0008),
    (0x000B, 0x000C),
    (0x000E, 0x001F),
    (0x007F, 0x00A0),
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x115F, 0x1160),
    (0x1680, 0x1680),
    (0x180E, 0x180E),
    (0x2000, 0x200F),
    (0x2028, 0x202F),
    (0x205F, 0x2064),
    (0x2066, 0x206F),
    (0x2800, 0x2800),
    (0x3000, 0x3000),
    (0x3164, 0x3164),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
)
_HIDDEN = re.compile("[" + "".join(f"\\U{low:08x}-\\U{high:08x}" for low, high in _HIDDEN_RANGES) + "]")


def _shown(match: re.Match[str]) -> str:
    return f"⟦U+{ord(match.group()):04X}⟧"


def mark(text: str) -> str:
    """`text` with every hidden character replaced by its visible code point."""
    return _HIDDEN.sub(_shown, text) if _HIDDEN.search(text) else text


def count(text: str) -> int:
    return len(_HIDDEN.findall(text))


def in_fix(*texts: str) -> int:
    """Hidden characters in the parts of a fix a person reads (diff, title, rationale)."""
    return sum(count(text) for text in texts)


def warning(count_found: int) -> str:
    """The line a card or console shows above a fix that holds hidden characters, or ""."""
    if not count_found:
        return ""
    return (
        f"⚠ {count_found} invisible or bidirectional character(s) in this fix, shown as ⟦U+…⟧: "
        "what you read may not be what runs (Trojan Source); approve only if you expect them"
    )
