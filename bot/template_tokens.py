"""What a token of a template is, for the template clusters (bot.clusters): templates cut into tokens with
their variable parts as `<*>`, and the shapes that say whether two tokens may be two values of one
variable (two words, the word values of one key) or where a merge on evidence may take place.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

WILDCARD = "<*>"
FIELD_NAMES = "(fields:"  # opens the token naming a structured line's other fields (bot.grouping)
_VARIABLE_PART = re.compile(
    r"\d+|<(?:num|hex|ip|host|url|email|uuid|path|str|duration|size|datetime|request|id|query|mac|token|bool|\*)>"
)
# An empty value is a value: "()", "[]", "key=" at the end of a token.
_EMPTY_VALUE = re.compile(r"(?<=\()(?=\))|(?<=\[)(?=\])|(?<==)(?=\s|$)")
_STRUCTURED = re.compile(r"[=\[\]{}]")
GAP = "\x00"  # the position a skeleton leaves out
_PLAIN_WORD = re.compile(r"^(?:<\*>|[A-Za-z_][\w.-]*)$")


@functools.lru_cache(maxsize=65536)
def is_word(token: str) -> bool:
    """A plain word, a word with a number in it (`user12`) or a list of words (`admin,dev`): what a
    variable that names things looks like."""
    return any(pattern.match(token) for pattern in (_PLAIN_WORD, _WORD_WITH_VARIABLE, _WORD_LIST))


@functools.lru_cache(maxsize=65536)
def letters(token: str) -> str:
    return "".join(c for c in token.replace(WILDCARD, " ") if c.isalpha())


_KEYED_WORD = re.compile(r"^([\w.-]+=)[A-Za-z_][\w.,-]*(?:<\*>[\w.,-]*)*$")
_WORD_WITH_VARIABLE = re.compile(r"^[A-Za-z_][\w.-]*(?:<\*>[\w.-]*)+$")
_WORD_LIST = re.compile(r"^[A-Za-z_][\w.-]*(?:,[A-Za-z_][\w.-]*)+$")


def merge_slot(token: str) -> str | None:
    """The gap a token leaves in the skeletons evidence merges on: `GAP` for a word (`alice`, `user12`),
    `key=` and the gap for a word value (`user=alice`); None where no merge may happen: a variable, a
    value of another shape, a bracketed kind (`[REDACTED:key]`)."""
    if token == WILDCARD or token.startswith(FIELD_NAMES):
        return None
    if _STRUCTURED.search(token) is None:
        return GAP if WILDCARD not in token or _WORD_WITH_VARIABLE.match(token) else None
    keyed = _KEYED_WORD.match(token)
    return keyed.group(1) + GAP if keyed is not None else None


def is_json_key(token: str) -> bool:
    """`"latency":`, `{"id":`, `(fields:id,user)`: names of fields of a payload, structure like
    punctuation: equal, they say nothing about which event a line is (every line of a structured log
    has them); different, the shapes differ."""
    return token.endswith('":') or token.startswith(FIELD_NAMES)


_WILDCARD_RUN = re.compile(r"(?:<\*>)(?:[.:,_-]?<\*>)+")
_ONLY_VARIABLE = re.compile(r"^[(\[{]?<\*>[)\]},;]?$")


def tokens_of(template: str) -> tuple[str, ...]:
    """The template's tokens; variable parts (digits, placeholders) inside a token become `<*>`, and a run
    of tokens that are only a variable (`<*> (<*>)`, `<*> <*>`) is one variable: a value written in one
    or in several words (`512 bytes`, `1.2 MB (1258291 bytes)`) stays one position."""
    text = _EMPTY_VALUE.sub(WILDCARD, _VARIABLE_PART.sub(WILDCARD, template))
    tokens: list[str] = []
    for raw in text.split():
        token = _WILDCARD_RUN.sub(WILDCARD, raw)
        if tokens and _ONLY_VARIABLE.match(token) and _ONLY_VARIABLE.match(tokens[-1]):
            tokens[-1] = WILDCARD
            continue
        tokens.append(token)
    return tuple(tokens)


def differing_slots(mine: Sequence[str], theirs: Sequence[str]) -> tuple[int, ...] | None:
    """The one or two positions where two templates of one length differ, when each holds there what a
    merge on evidence takes (`merge_slot`, alike on both sides: two words, two word values of one key);
    a position either has learned (`<*>`) agrees with anything. None otherwise."""
    differ: list[int] = []
    for i, (a, b) in enumerate(zip(mine, theirs, strict=True)):
        if a == b or WILDCARD in (a, b):
            continue
        slot = merge_slot(a)
        if slot is None or slot != merge_slot(b) or len(differ) == 2:
            return None
        differ.append(i)
    return tuple(differ) if differ else None
