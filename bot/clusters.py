"""Drain-style template clusters on top of the token masks: plain-word variables (user names, program
names, host names without a known domain) become `<*>` once lines that differ only there are seen.

Masks (bot.masking) catch variables that look like values. What is left differs between two lines of one
event only in a few words: `session closed for user cyrus` / `… user news`. Lines with the same token
count are compared position by position (after Drain, He et al., ICWS 2017): a line joins the most similar
cluster when at least `similarity` of its positions match, and the positions that differ become `<*>`.
Digits and mask placeholders inside a token become `<*>`; a token that is all variable matches any.

A cluster's key is the template that created it, so keys never change while the process runs; the
template shown to people grows wildcards. Memory is bounded: an exact-template cache and at most
`max_clusters` clusters per token count; past that, new templates get their own key without clustering.

To keep keys across restarts, a set can report the clusters created or generalised since it was last asked
(`track_changes`, `take_changed`) and be rebuilt from their saved form (`SavedCluster`, `restore`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

WILDCARD = "<*>"
DEFAULT_SIMILARITY = 0.8
DEFAULT_MAX_CLUSTERS = 2000  # per token count
DEFAULT_MAX_CACHE = 100_000
MAX_TOKENS = 120  # longer templates are only matched exactly

_VARIABLE_PART = re.compile(
    r"\d+|<(?:num|hex|ip|host|url|email|uuid|path|str|duration|size|datetime|request|id|query|\*)>"
)
# An empty value is a value: "()", "[]", "key=" at the end of a token.
_EMPTY_VALUE = re.compile(r"(?<=\()(?=\))|(?<=\[)(?=\])|(?<==)(?=\s|$)")
_PLAIN_WORD = re.compile(r"^(?:<\*>|[A-Za-z_][\w.-]*)$")
_WILDCARD_RUN = re.compile(r"(?:<\*>)(?:[.:,_-]?<\*>)+")
# "1.2 MB (1258291 bytes)": a value in brackets right after a value restates it.
_RESTATED = re.compile(r"(<(?:size|num)>) \(<(?:size|num)>\)")


def tokens_of(template: str) -> tuple[str, ...]:
    """The template's tokens; variable parts (digits, placeholders) inside a token become `<*>`."""
    text = _VARIABLE_PART.sub(WILDCARD, _RESTATED.sub(r"\1", template))
    text = _EMPTY_VALUE.sub(WILDCARD, text)
    return tuple(_WILDCARD_RUN.sub(WILDCARD, t) for t in text.split())


@dataclass(frozen=True, slots=True)
class SavedCluster:
    """What a cluster needs to come back after a restart with the same key and the same matching."""

    key: str
    template: str
    size: int
    learned: tuple[int, ...]


@dataclass(slots=True)
class Cluster:
    key: str  # the first template seen; stable
    tokens: list[str]
    size: int = 1
    learned: set[int] = field(default_factory=set)  # positions that became `<*>` by absorbing lines

    @property
    def template(self) -> str:
        return " ".join(self.tokens)

    def similarity(self, tokens: tuple[str, ...]) -> float:
        """Share of equal tokens among the positions not yet known to vary (two variables are skipped).

        Only plain words, a variable against a word, or two tokens that both hold a variable may differ:
        otherwise (`user=root` / `user=guest`, `SOCKS<*>` / `HTTPS`) the shapes differ: another event.
        """
        same = compared = 0
        for i, (mine, theirs) in enumerate(zip(self.tokens, tokens, strict=True)):
            if i in self.learned or (mine == theirs == WILDCARD):
                continue
            compared += 1
            if mine == theirs:
                same += 1
            elif not (_PLAIN_WORD.match(mine) and _PLAIN_WORD.match(theirs)) and not (
                WILDCARD in mine and WILDCARD in theirs
            ):
                return 0.0  # `user=root` / `user=guest`, `HTTPS` / `SOCKS<*>`: shapes differ, not a value
        return same / compared if compared else 1.0

    def absorb(self, tokens: tuple[str, ...]) -> bool:
        """Count `tokens` in; True when a position became variable (the template or its matching changed)."""
        before = len(self.learned)
        for i, token in enumerate(tokens):
            if self.tokens[i] != token:
                self.tokens[i] = WILDCARD
                self.learned.add(i)
        self.size += 1
        return len(self.learned) != before

    def saved(self) -> SavedCluster:
        return SavedCluster(self.key, self.template, self.size, tuple(sorted(self.learned)))

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
        return cls(key=saved.key, tokens=tokens, size=saved.size, learned=set(saved.learned))


@dataclass(slots=True)
class TemplateClusters:
    """One set of clusters (e.g. per service and error class). Not thread-safe."""

    similarity: float = DEFAULT_SIMILARITY
    max_clusters: int = DEFAULT_MAX_CLUSTERS
    max_cache: int = DEFAULT_MAX_CACHE
    track_changes: bool = False  # remember created and generalised clusters for `take_changed`
    _by_length: dict[int, list[Cluster]] = field(default_factory=dict)
    _cache: dict[str, Cluster] = field(default_factory=dict)
    _changed: dict[str, Cluster] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 < self.similarity <= 1.0:
            raise ValueError(f"similarity must be in (0, 1], not {self.similarity}")

    def assign(self, template: str) -> Cluster:
        """The cluster `template` belongs to, created when none is similar enough."""
        cached = self._cache.get(template)
        if cached is not None:
            cached.size += 1
            return cached
        tokens = tokens_of(template)
        cluster = self._match(tokens)
        if cluster is None:
            cluster = Cluster(key=template, tokens=list(tokens))
            candidates = self._by_length.setdefault(len(tokens), [])
            if tokens and len(tokens) <= MAX_TOKENS and len(candidates) < self.max_clusters:
                candidates.append(cluster)
                if self.track_changes:
                    self._changed[cluster.key] = cluster
        elif cluster.absorb(tokens) and self.track_changes:
            self._changed[cluster.key] = cluster
        if len(self._cache) < self.max_cache:
            self._cache[template] = cluster
        return cluster

    @property
    def has_changes(self) -> bool:
        return bool(self._changed)

    def take_changed(self) -> list[Cluster]:
        """The clusters created or generalised since the last call (only with `track_changes`)."""
        changed = list(self._changed.values())
        self._changed.clear()
        return changed

    def restore(self, saved: Iterable[SavedCluster]) -> int:
        """Bring saved clusters back, in order, within `max_clusters`; returns how many were skipped
        (malformed, over the bound, or a key already present), each logged."""
        known = {c.key for clusters in self._by_length.values() for c in clusters}
        skipped = 0
        for item in saved:
            try:
                cluster = Cluster.from_saved(item)
            except ValueError as exc:
                log.warning("skipped the saved template cluster %r: %s", item.key[:80], exc)
                skipped += 1
                continue
            candidates = self._by_length.setdefault(len(cluster.tokens), [])
            if cluster.key in known or len(candidates) >= self.max_clusters:
                log.warning(
                    "skipped the saved template cluster %r: duplicate or over the bound", item.key[:80]
                )
                skipped += 1
                continue
            candidates.append(cluster)
            known.add(cluster.key)
        return skipped

    def _match(self, tokens: tuple[str, ...]) -> Cluster | None:
        if not tokens or len(tokens) > MAX_TOKENS:
            return None
        best: Cluster | None = None
        best_score = -1.0
        for cluster in self._by_length.get(len(tokens), ()):
            score = cluster.similarity(tokens)
            if score > best_score:
                best, best_score = cluster, score
        if best is not None and best_score >= self.similarity:
            return best
        return None

    def __len__(self) -> int:
        return sum(len(c) for c in self._by_length.values())
