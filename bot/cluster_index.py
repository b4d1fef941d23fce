"""The second level of the template clusters' index: inside one bucket, a template is compared only with the
clusters that could reach the similarity threshold, so a flood of new kinds that share their first words
(all in one bucket) costs a few dictionary look-ups per line instead of a comparison with every cluster.

A cluster's *words* are the positions that count as equal in `Cluster.similarity` when a template holds
the same token there and that a differing token never skips: not learned, a constant (no `<*>`) with
letters, not a JSON key. Where a template differs from one of its W words, the shapes differ (similarity
0) or the position is compared. With M of the words found in the template and V *loose* positions that may
count as equal too (a token with letters and `<*>`), similarity <= (M + V) / (W + V). A cluster that needs
at least `need` of its words to reach the threshold misses at most W - need of them, so any W - need + 1
of its words (its *prefix*: the rarest in the bucket when it was placed) hold one of the template's words
at the same position. A template is compared with the clusters one of whose prefix words it holds, and
with the few that cannot be filtered (need 0), in the order of the bucket: which cluster wins is the one
a comparison with every cluster of the bucket would find.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Generic, Protocol, TypeVar

Word = tuple[int, str]  # a position and the constant token there


class Keyed(Protocol):
    @property
    def key(self) -> str: ...


C = TypeVar("C", bound=Keyed)


@functools.lru_cache(maxsize=4096)
def needed_words(words: int, loose: int, similarity: float) -> int:
    """The fewest of its `words` a template must hold for a cluster to reach `similarity` (0: any
    template may): the bound is computed as `Cluster.similarity` divides, so no rounding lets one through
    that the comparison would have let through."""
    if words + loose == 0:
        return 0
    for held in range(words + 1):
        if (held + loose) / (words + loose) >= similarity:
            return held
    return words  # unreachable for similarity <= 1


class Bucket(Generic[C]):
    """The clusters of one bucket in the order they were placed, their prefix words, and the order in
    which they were last matched."""

    __slots__ = (
        "_df",
        "_placed",
        "_postings",
        "_prefix",
        "_rank",
        "_recent",
        "_unfiltered",
        "_words",
        "members",
    )

    def __init__(self) -> None:
        self.members: dict[str, C] = {}  # in the order placed: the order a template is compared in
        self._rank: dict[str, int] = {}  # key -> placement number
        self._words: dict[str, tuple[Word, ...]] = {}  # the words a member had when placed
        self._prefix: dict[str, tuple[Word, ...]] = {}
        self._postings: dict[Word, dict[str, C]] = {}  # prefix word -> the members it is a prefix word of
        self._unfiltered: dict[str, C] = {}  # members any template may match
        self._df: dict[Word, int] = {}  # word -> how many members hold it
        self._recent: OrderedDict[str, C] = OrderedDict()  # least recently matched first
        self._placed = 0

    def __len__(self) -> int:
        return len(self.members)

    def add(self, cluster: C, words: Sequence[Word], need: int) -> None:
        """Place `cluster` last, with its `words`, of which a template must hold `need` (0: unfiltered).
        Another member of its key is replaced in its place, as a dict would."""
        key = cluster.key
        if key in self.members:
            self._forget(key)
        else:
            self._placed += 1
            self._rank[key] = self._placed
        self.members[key] = cluster
        self._recent[key] = cluster
        df = self._df
        if need <= 0:
            self._unfiltered[key] = cluster
            prefix: tuple[Word, ...] = ()
        else:
            # rarest first; among equally rare ones the later position (values tend to come last)
            ranked = sorted(words, key=lambda w: (df.get(w, 0), -w[0]))
            prefix = tuple(ranked[: len(words) - need + 1])
            for word in prefix:
                self._postings.setdefault(word, {})[key] = cluster
        self._prefix[key] = prefix
        self._words[key] = tuple(words)
        for word in words:
            df[word] = df.get(word, 0) + 1

    def remove(self, key: str) -> None:
        if self.members.pop(key, None) is None:
            return
        del self._rank[key]
        del self._recent[key]
        self._forget(key)

    def _forget(self, key: str) -> None:
        """Drop what the index knows of member `key` but its place."""
        self._unfiltered.pop(key, None)
        for word in self._prefix.pop(key):
            holders = self._postings[word]
            del holders[key]
            if not holders:
                del self._postings[word]
        df = self._df
        for word in self._words.pop(key):
            left = df[word] - 1
            if left:
                df[word] = left
            else:
                del df[word]

    def touch(self, key: str) -> None:
        """`key` was matched: it is the most recently matched member now."""
        self._recent.move_to_end(key)

    def least_recent(self) -> C:
        return next(iter(self._recent.values()))

    def candidates(self, tokens: Iterable[str]) -> Iterable[C]:
        """The members a template of `tokens` may reach the threshold with, in the order placed."""
        postings = self._postings
        found: dict[str, C] = dict(self._unfiltered) if self._unfiltered else {}
        for word in enumerate(tokens):
            holders = postings.get(word)
            if holders is not None:
                found.update(holders)
        if len(found) <= 1:
            return found.values()
        rank = self._rank
        return sorted(found.values(), key=lambda c: rank[c.key])
