"""One template cluster: the template that created it (its key), the template it has grown into, the
positions it has learned to vary, and how similar a new template is to it; and its saved form.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.template_tokens import WILDCARD, is_json_key, is_word, letters, tokens_of

MAX_TOKENS = 120  # longer templates are only matched exactly
DEFAULT_SETTLED_AFTER = 20  # lines holding one word with a value in it (`job_<*>`) before it is constant
DEFAULT_SETTLED_WORDS_AFTER = 2  # lines holding one plain word at a position before it is constant


@dataclass(frozen=True, slots=True)
class SavedCluster:
    """What a cluster needs to come back after a restart with the same key and the same matching."""

    key: str
    template: str
    size: int
    learned: tuple[int, ...]
    last_seen: float = 0.0  # when a line last matched it (0: unknown)


@dataclass(slots=True)
class Cluster:
    key: str  # the first template seen; stable
    tokens: list[str]
    size: int = 1
    learned: set[int] = field(default_factory=set)  # positions that became `<*>` by absorbing lines
    last_seen: float = 0.0  # when a line last matched it, from the caller's clock
    # bookkeeping of the owning set, not part of what the cluster is
    saved_seen: float = field(default=0.0, compare=False)  # `last_seen` as last saved
    used: int = field(default=0, compare=False)  # the set's match counter at the last match (LRU order)
    evicted: bool = field(default=False, compare=False)
    merged_into: Cluster | None = field(default=None, compare=False, repr=False)
    stored: bool = field(default=False, compare=False)  # saved once, so an eviction must delete it

    @property
    def template(self) -> str:
        return " ".join(self.tokens)

    def similarity(
        self,
        tokens: tuple[str, ...],
        floor: float = 0.0,
        settled_after: int = DEFAULT_SETTLED_AFTER,
        settled_words_after: int = DEFAULT_SETTLED_WORDS_AFTER,
    ) -> float:
        """Share of equal words among the positions not yet known to vary. Positions where both hold the
        same token without a letter (`<*>,`, `-`, `|`) or a JSON key, or two values written alike, are skipped: they say
        little about which event a line is, so a long run of them must not outweigh the word that differs.

        Only plain words, a variable against a word, or two tokens that both hold a variable may differ:
        otherwise (`user=root` / `user=guest`, `<*>:<*>` / `HTTPS`) the shapes differ: another event.
        0.0 as soon as the share cannot reach `floor` any more (a flood of distinct lines scans many).

        A cluster of `settled_words_after` lines or more that still holds one plain word at a position has
        shown that word to be constant: a line with another word there is another event (`started` /
        `stopped`), 0.0. Where either token holds a value part (`attempt_<*>_m`, `<*>`) it takes
        `settled_after` lines, as such a token is more often a value. A variable shows itself sooner, and
        evidence (`merge_after`, a cluster covered by one that learned the position) still merges one that
        came late.
        """
        same = compared = 0
        count = len(tokens)
        for i, (mine, theirs) in enumerate(zip(self.tokens, tokens, strict=True)):
            if i in self.learned:
                continue
            if mine == theirs:
                if letters(mine) and not is_json_key(mine):
                    same += 1
                    compared += 1
                continue
            if WILDCARD in mine and WILDCARD in theirs:
                if letters(mine) == letters(theirs):
                    continue  # two values written alike (`<*>`, `<<*>`): no word differs
            elif not (is_word(mine) and is_word(theirs)):
                return 0.0  # `user=root` / `user=guest`, `HTTPS` / `<*>:<*>`: shapes differ, not a value
            if self.size >= (
                settled_after if WILDCARD in mine or WILDCARD in theirs else settled_words_after
            ):
                return 0.0  # one word over that many lines is a constant: another word, another event
            compared += 1
            rest = count - i - 1
            if (same + rest) / (compared + rest) < floor:
                return 0.0  # even if every other position were equal
        return same / compared if compared else 1.0

    def absorb(self, tokens: tuple[str, ...]) -> list[int]:
        """Count `tokens` in; the positions that became variable (the template or its matching changed)."""
        learned = []
        for i, token in enumerate(tokens):
            if self.tokens[i] != token:
                self.tokens[i] = WILDCARD
                if i not in self.learned:
                    self.learned.add(i)
                    learned.append(i)
        self.size += 1
        return learned

    def saved(self) -> SavedCluster:
        return SavedCluster(self.key, self.template, self.size, tuple(sorted(self.learned)), self.last_seen)

    @classmethod
    def from_saved(cls, saved: SavedCluster) -> Cluster:
        """The cluster back from its saved form; ValueError when the parts do not fit together."""
        tokens = saved.template.split()
        if not tokens or len(tokens) > MAX_TOKENS:
            raise ValueError(f"a template of {len(tokens)} tokens is never clustered")
        first = tokens_of(saved.key)
        if len(first) != len(tokens) or any(
            t not in (k, WILDCARD) for t, k in zip(tokens, first, strict=False)
        ):
            raise ValueError("the template is not a generalisation of the key")
        if any(not 0 <= i < len(tokens) or tokens[i] != WILDCARD for i in saved.learned):
            raise ValueError(f"learned positions {saved.learned} are not wildcards of the template")
        if saved.size < 1:
            raise ValueError(f"size {saved.size} is not positive")
        return cls(
            key=saved.key,
            tokens=tokens,
            size=saved.size,
            learned=set(saved.learned),
            last_seen=saved.last_seen,
            saved_seen=saved.last_seen,
            stored=True,
        )
