"""Bidirectional and invisible characters in a fix are shown visibly, with a warning, wherever a person
reads the fix before approving it (issue 12.4: Trojan Source, CVE-2021-42574)."""

from __future__ import annotations

import sys
import unicodedata
from dataclasses import replace

import pytest

from bot import invisible
from bot.render import proposal_text
from bot.telegram import cards
from tests.fakes.fake_bot_api import parse_text
from tests.test_telegram_cards import incident, proposal

# The Trojan Source classes: bidi overrides/embeddings/isolates, marks, zero-width, tags, odd spaces.
HIDDEN = {
    "right-to-left override": "\u202e",
    "left-to-right isolate": "\u2066",
    "pop directional isolate": "\u2069",
    "right-to-left mark": "\u200f",
    "arabic letter mark": "\u061c",
    "zero width space": "\u200b",
    "zero width joiner": "\u200d",
    "word joiner": "\u2060",
    "byte order mark": "\ufeff",
    "soft hyphen": "\u00ad",
    "tag latin small a": "\U000e0061",
    "no-break space": "\u00a0",
    "ideographic space": "\u3000",
    "hangul filler": "\u3164",
    "backspace control": "\x08",
    "escape control": "\x1b",
}


def test_every_format_control_and_odd_space_is_hidden() -> None:
    for codepoint in range(sys.maxunicode + 1):
        char = chr(codepoint)
        category = unicodedata.category(char)
        hidden = (
            category == "Cf"
            or (category == "Cc" and char not in "\t\n\r")
            or (category == "Zs" and char != " ")
        )
        if hidden:
            assert invisible.count(char) == 1, f"U+{codepoint:04X} ({category}) is not marked"


@pytest.mark.parametrize(
    "text",
    [
        "def total(items):\n\treturn sum(PRICES[i] for i in items)\r\n",
        "café naïve Ærø – “quoted” … ±€",
        "日本語のコメント 中文 한국어",
        "emoji 🚀🔥 and a flag 🇩🇪",
        "",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert invisible.mark(text) == text and invisible.count(text) == 0


def bidi_diff(char: str) -> str:
    return (
        f'--- a/app.py\n+++ b/app.py\n@@ -1 +1 @@\n-access = "user"\n+access = "user{char} # admins only"\n'
    )


@pytest.mark.parametrize("name", list(HIDDEN))
def test_bidi_and_invisible_characters_in_diffs_were_shown_raw_on_cards(name: str) -> None:
    char = HIDDEN[name]
    prop = proposal(diff=bidi_diff(char), n=1)
    text = cards.card_text(incident(), prop, [], diffs_inline=True)
    parse_text(text, "HTML")  # still valid Telegram HTML
    assert char not in text
    assert f"⟦U+{ord(char):04X}⟧" in text
    assert "1 invisible or bidirectional character(s)" in text and "Trojan Source" in text
    document = cards.diff_document(prop).decode("utf-8")
    assert char not in document and f"⟦U+{ord(char):04X}⟧" in document and "# ⚠ 1 invisible" in document
    console = proposal_text(incident(), prop, with_diffs=True)
    assert char not in console and f"⟦U+{ord(char):04X}⟧" in console and "Trojan Source" in console


def test_hidden_characters_in_title_and_rationale_are_counted_and_shown() -> None:
    base = proposal(rationale="safe\u202e fix", n=1)
    [candidate] = base.candidates
    fix = replace(candidate.fix, title="Guard\u200b the total")
    prop = replace(base, candidates=(replace(candidate, fix=fix),))
    text = cards.card_text(incident(), prop, [], diffs_inline=True)
    assert "\u202e" not in text and "\u200b" not in text
    assert "2 invisible or bidirectional character(s)" in text


def test_a_fix_without_hidden_characters_has_no_warning() -> None:
    text = cards.card_text(incident(), proposal(n=1), [], diffs_inline=True)
    assert "invisible" not in text and "⟦U+" not in text
