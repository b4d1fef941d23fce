"""Drain-style template clusters on top of the token masks: plain-word variables (user names, program
names, host names without a known domain) become `<*>` once lines that differ only there are seen.

Masks (bot.masking) catch variables that look like values. What is left differs between two lines of one
event only in a few words: `session closed for user cyrus` / `… user news`. Lines with the same token
count are compared position by position (after Drain, He et al., ICWS 2017): a line joins the most similar
cluster when at least `similarity` of its positions match, and the positions that differ become `<*>`.
Digits and mask placeholders inside a token become `<*>`; a token that is all variable matches any.

A cluster's key is the template that created it, so keys never change while the cluster lives; the
template shown to people grows wildcards. Memory is bounded: an exact-template cache and at most
`max_clusters` clusters per token count. A new template that finds its token count full evicts the least
recently matched cluster of that count and takes its place, so one-off templates never lock a length
out for good. An evicted cluster is forgotten: a later line of it starts a new cluster keyed by that
line's template, which may be another key (another incident) than before — the price of the bound.

To keep keys across restarts, a set can report the clusters created, generalised or evicted since it was
last asked (`track_changes`, `take_changed`, `take_forgotten`) and be rebuilt from their saved form
(`SavedCluster`, `restore`). Each match notes when it happened (`last_seen`, in memory); a cluster whose
last saved `last_seen` is older than TOUCH_INTERVAL_S is reported as changed too, so its time is written
about once an hour, never per line.

Here is the set of clusters: its index, its bounds and the merges on evidence. One cluster and its
similarity are in bot.cluster_model; what a token is (its shape, what may vary) in bot.template_tokens.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bot.cluster_index import Bucket, Word, needed_words
from bot.cluster_model import (
    DEFAULT_SETTLED_AFTER,
    DEFAULT_SETTLED_WORDS_AFTER,
    MAX_TOKENS,
    Cluster,
    SavedCluster,
)
from bot.template_tokens import (
    FIELD_NAMES,
    GAP,
    WILDCARD,
    differing_slots,
    is_json_key,
    letters,
    merge_slot,
    tokens_of,
)

log = logging.getLogger(__name__)

DEFAULT_SIMILARITY = 0.8
DEFAULT_MAX_CLUSTERS = 2000  # per token count
DEFAULT_MAX_CACHE = 20_000  # exact templates; emptied when full, so it holds recent ones only
DEFAULT_DEPTH = 2  # leading constant tokens of a template whose buckets are searched for its cluster
DEFAULT_MERGE_AFTER = 5  # clusters that differ in one word only, and only there, before they are merged
DEFAULT_MAX_BUCKET = 256  # clusters compared with one template at most (the least recently used goes)
MAX_MERGE_TOKENS = 40  # longer templates are never merged on evidence
ONE_OFF_SIZE = 2  # mean lines per cluster, at most, of the clusters a merge on two positions takes
SMALL_BUCKET = 64  # a bucket this small is searched whole for clusters a new one may merge with
TOUCH_INTERVAL_S = 3600.0  # a matched cluster's `last_seen` is saved again once it is this much older


@dataclass(slots=True)
class TemplateClusters:
    """One set of clusters (e.g. per service and error class). Not thread-safe.

    Matching one template looks only at the clusters that share its token count and one of its first
    `depth` constant tokens at the same position (an index like Drain's prefix tree), at most
    `max_bucket` of them, so its cost does not grow with the number of clusters; and of those only the
    ones that could reach `similarity` (bot.cluster_index), so a flood of new kinds sharing their first
    words costs look-ups, not a comparison with every cluster of their bucket.

    Evidence merges clusters (`merge_after`): when that many clusters agree at every position but one
    (each a word there, `user12` or `admin,dev` too, or the word value of one key, `user=alice`; no bracketed
    kind, not yet a variable), that position is a variable of one event (`user alice`, `user bob`, `user
    carol`), whatever the similarity says; they become one cluster, the largest, whose key the others'
    keys now stand for (`take_merged`). Two values are not evidence (`shutdown`/`startup`).
    """

    similarity: float = DEFAULT_SIMILARITY
    max_clusters: int = DEFAULT_MAX_CLUSTERS
    max_cache: int = DEFAULT_MAX_CACHE
    track_changes: bool = False  # remember changed and evicted clusters for `take_changed`/`take_forgotten`
    depth: int = DEFAULT_DEPTH
    merge_after: int = DEFAULT_MERGE_AFTER  # 0: never merge on evidence
    settled_after: int = DEFAULT_SETTLED_AFTER  # see Cluster.similarity
    settled_words_after: int = DEFAULT_SETTLED_WORDS_AFTER  # see Cluster.similarity
    max_bucket: int = DEFAULT_MAX_BUCKET
    # least recently matched first; an OrderedDict, as taking the first of a plain dict that keeps losing its
    # first entries walks over their holes
    _by_length: dict[int, OrderedDict[str, Cluster]] = field(default_factory=dict)
    _buckets: dict[tuple[int, int, str], Bucket[Cluster]] = field(default_factory=dict)
    _bucket_of: dict[str, tuple[int, int, str]] = field(default_factory=dict)
    _skeletons: dict[tuple[str, ...], dict[str, Cluster]] = field(default_factory=dict)
    _skeletons_of: dict[str, list[tuple[str, ...]]] = field(default_factory=dict)
    _cache: dict[str, Cluster] = field(default_factory=dict)
    _changed: dict[str, Cluster] = field(default_factory=dict)  # created or generalised
    _touched: dict[str, Cluster] = field(default_factory=dict)  # matched; the saved `last_seen` is old
    _forgotten: set[str] = field(default_factory=set)  # keys evicted since `take_forgotten`
    _merged: list[tuple[str, str]] = field(default_factory=list)  # (merged key, surviving key)
    _matches: int = 0
    evictions: int = 0  # clusters evicted to make room, ever
    merges: int = 0  # clusters merged into another, ever

    def __post_init__(self) -> None:
        if not 0.0 < self.similarity <= 1.0:
            raise ValueError(f"similarity must be in (0, 1], not {self.similarity}")
        if self.max_clusters < 1:
            raise ValueError(f"max_clusters must be positive, not {self.max_clusters}")
        if self.depth < 1 or self.max_bucket < 1:
            raise ValueError(f"depth and max_bucket must be positive, not {self.depth}, {self.max_bucket}")
        if self.settled_after < 2 or self.settled_words_after < 2:
            raise ValueError(
                f"settled_after and settled_words_after must be at least 2, not {self.settled_after}, "
                f"{self.settled_words_after}"
            )
        if self.merge_after == 1 or self.merge_after < 0:
            raise ValueError(f"merge_after must be 0 (off) or at least 2, not {self.merge_after}")

    def assign(self, template: str, now: float = 0.0) -> Cluster:
        """The cluster `template` belongs to, created when none is similar enough; `now` is noted as its
        `last_seen`."""
        cached = self._cache.get(template)
        if cached is not None:
            cached = _resolved(cached)
        if cached is not None and not cached.evicted:
            cached.size += 1
            return self._seen(cached, now)
        tokens = tokens_of(template)
        # or the cluster this template created, when a merge moved it out of the buckets the template
        # looks in: before, a second cluster of the same key took its place in the index, beside it
        cluster = self._match(tokens) or self._live(template, len(tokens))
        if cluster is None:
            cluster = Cluster(key=template, tokens=list(tokens))
            if not tokens or len(tokens) > MAX_TOKENS:
                return cluster  # never clustered, cached or saved: its key is its template anyway
            self._add(cluster)
            cluster = self._merge_on_evidence(cluster)
        else:
            skeletons = self._skeletons_of.get(cluster.key, ())
            learned = cluster.absorb(tokens)
            if learned:
                self._reindex(cluster)
                if self.track_changes:
                    self._changed[cluster.key] = cluster
                cluster = self._merge_subsumed(cluster, skeletons, learned)
        if cached is None and len(self._cache) >= self.max_cache:
            # emptied rather than closed to newcomers: under a flood of one-off templates a full cache held
            # the first ones forever, and with them every cluster evicted since (143 MB on 200 k lines)
            self._cache.clear()
        if self.max_cache:
            self._cache[template] = cluster  # an evicted cluster's entry is replaced in place
        return self._seen(cluster, now)

    def _live(self, key: str, length: int) -> Cluster | None:
        order = self._by_length.get(length)
        return None if order is None else order.get(key)

    def _seen(self, cluster: Cluster, now: float) -> Cluster:
        self._matches += 1
        cluster.used = self._matches
        cluster.last_seen = now
        order = self._by_length.get(len(cluster.tokens))
        if order is not None and cluster.key in order:
            order.move_to_end(cluster.key)
            self._buckets[self._bucket_of[cluster.key]].touch(cluster.key)
        if self.track_changes and now - cluster.saved_seen >= TOUCH_INTERVAL_S:
            self._touched[cluster.key] = cluster
        return cluster

    # --- the index -----------------------------------------------------------------------------------

    def _bucket_keys(self, tokens: Sequence[str]) -> list[tuple[int, int, str]]:
        """The buckets a template of `tokens` may find its cluster in: its first `depth` constant tokens
        with their positions (one `<*>` bucket when it has none). A cluster is placed in the first."""
        keys: list[tuple[int, int, str]] = []
        for i, token in enumerate(tokens):
            if WILDCARD not in token:
                keys.append((len(tokens), i, token))
                if len(keys) == self.depth:
                    break
        return keys or [(len(tokens), -1, WILDCARD)]

    def _place(self, cluster: Cluster, *, evict: bool = True) -> None:
        """Put `cluster` last in its bucket; a full bucket evicts its least recently matched cluster first
        (unless `evict` is False: a generalised cluster never makes a bucket evict)."""
        key = self._bucket_keys(cluster.tokens)[0]
        bucket = self._buckets.get(key)
        if bucket is not None and evict and len(bucket) >= self.max_bucket:
            victim = bucket.least_recent()
            self._remove(victim)
            self._evict(victim)
            bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = Bucket()
        words, loose = _filter_words(cluster)
        bucket.add(cluster, words, needed_words(len(words), loose, self.similarity))
        self._bucket_of[cluster.key] = key
        self._index_skeletons(cluster)

    def _unplace(self, cluster: Cluster) -> None:
        key = self._bucket_of.pop(cluster.key, None)
        if key is not None:
            bucket = self._buckets[key]
            bucket.remove(cluster.key)
            if not len(bucket):
                del self._buckets[key]
        for skeleton in self._skeletons_of.pop(cluster.key, ()):
            members = self._skeletons[skeleton]
            members.pop(cluster.key, None)
            if not members:
                del self._skeletons[skeleton]

    def _reindex(self, cluster: Cluster) -> None:
        """Place `cluster` again after positions of it became variable."""
        self._unplace(cluster)
        self._place(cluster, evict=False)

    def _remove(self, cluster: Cluster) -> None:
        self._unplace(cluster)
        order = self._by_length.get(len(cluster.tokens))
        if order is not None:
            order.pop(cluster.key, None)

    def _index_skeletons(self, cluster: Cluster) -> None:
        if not self.merge_after or len(cluster.tokens) > MAX_MERGE_TOKENS:
            return
        skeletons = []
        for i, token in enumerate(cluster.tokens):
            slot = merge_slot(token)
            if slot is None:
                continue
            skeleton = (*cluster.tokens[:i], slot, *cluster.tokens[i + 1 :])
            self._skeletons.setdefault(skeleton, {})[cluster.key] = cluster
            skeletons.append(skeleton)
        self._skeletons_of[cluster.key] = skeletons

    def _merge_subsumed(
        self, cluster: Cluster, skeletons: Sequence[tuple[str, ...]], learned: Sequence[int]
    ) -> Cluster:
        """Merge into `cluster`, which has just learned the positions `learned`, the clusters that agree with
        it everywhere else and hold there a value of the kind it held (`skeletons`: its skeletons before):
        a line of theirs would match it now (`user=bob` stays apart from `user=alice1`, until `alice1` and
        `carol7` showed the position to vary)."""
        subsumed: dict[str, Cluster] = {}
        for skeleton in skeletons:
            at = next(i for i, token in enumerate(skeleton) if token.endswith(GAP))
            if at not in learned:
                continue
            for other in self._skeletons.get(skeleton, {}).values():
                if other is not cluster:
                    subsumed[other.key] = other
        if not subsumed:
            return cluster
        return self._merge([cluster, *subsumed.values()], ())

    def _merge_on_evidence(self, cluster: Cluster) -> Cluster:
        """Merge `cluster` with the clusters that agree with it at every position but one, once there are
        `merge_after` of them, or else but two (`_merge_on_pairs`); returns the cluster that holds it now."""
        if not self.merge_after:
            return cluster
        for skeleton in list(self._skeletons_of.get(cluster.key, ())):
            members = self._skeletons.get(skeleton)
            if members is None or len(members) < self.merge_after:
                continue
            at = next(i for i, token in enumerate(skeleton) if token.endswith(GAP))
            return self._merge(list(members.values()), (at,))
        return self._merge_on_pairs(cluster)

    def _merge_on_pairs(self, cluster: Cluster) -> Cluster:
        """Merge `cluster` with the clusters of its buckets that agree with it at every position but the
        same two, each of the kinds a one-position merge takes (a word, the word value of one key), once
        there are `merge_after` of them: a template with two word-valued variables (`user alice on web1`,
        `user bob on db2`, …) shows no two clusters that differ in one position only."""
        tokens = cluster.tokens
        if len(tokens) > MAX_MERGE_TOKENS:
            return cluster
        pairs: dict[tuple[int, ...], list[Cluster]] = {}
        singles: dict[int, list[Cluster]] = {}
        seen = {cluster.key}
        for key in self._bucket_keys(tokens):
            bucket = self._buckets.get(key)
            if bucket is None:
                continue
            members = bucket.members.values() if len(bucket) <= SMALL_BUCKET else bucket.candidates(tokens)
            for other in members:
                if other.key in seen:
                    continue
                seen.add(other.key)
                differ = differing_slots(tokens, other.tokens)
                if differ is None:
                    continue
                if len(differ) == 2:
                    pairs.setdefault(differ, []).append(other)
                else:
                    singles.setdefault(differ[0], []).append(other)
        best: tuple[tuple[int, ...], list[Cluster]] | None = None
        for pair, members in pairs.items():
            group = members + singles.get(pair[0], []) + singles.get(pair[1], [])
            if (
                len(group) + 1 >= self.merge_after
                and sum(c.size for c in group) <= ONE_OFF_SIZE * len(group)
                and (best is None or len(group) > len(best[1]))
            ):
                best = (pair, group)
        if best is None:
            return cluster
        return self._merge([cluster, *best[1]], best[0])

    def _merge(self, members: list[Cluster], positions: Sequence[int]) -> Cluster:
        """Make `members` one cluster, the largest (the first of them), whose `positions` become variable;
        the others' keys now stand for its key."""
        survivor = max(members, key=lambda c: c.size)
        for other in members:
            if other is survivor:
                continue
            self._remove(other)
            other.merged_into = survivor
            survivor.size += other.size
            survivor.last_seen = max(survivor.last_seen, other.last_seen)
            for i in other.learned:  # a position one of them has learned is variable in all
                survivor.tokens[i] = WILDCARD
                survivor.learned.add(i)
            self.merges += 1
            self._merged.append((other.key, survivor.key))
            if self.track_changes:
                self._changed.pop(other.key, None)
                self._touched.pop(other.key, None)
                if other.stored:
                    self._forgotten.add(other.key)
        for at in positions:
            survivor.tokens[at] = WILDCARD
            survivor.learned.add(at)
        self._reindex(survivor)
        if self.track_changes:
            self._changed[survivor.key] = survivor
        return survivor

    def _add(self, cluster: Cluster) -> None:
        """Place a new cluster, evicting the least recently matched one of its token count when full."""
        order = self._by_length.setdefault(len(cluster.tokens), OrderedDict())
        if len(order) >= self.max_clusters:
            victim = next(iter(order.values()))
            self._remove(victim)
            self._evict(victim)
            log.debug("evicted the template cluster %r (last seen %.0f)", victim.key[:80], victim.last_seen)
        order[cluster.key] = cluster
        self._place(cluster)
        if self.track_changes:
            self._changed[cluster.key] = cluster
            self._forgotten.discard(cluster.key)

    def _evict(self, cluster: Cluster) -> None:
        cluster.evicted = True
        self.evictions += 1
        if self.track_changes:
            self._changed.pop(cluster.key, None)
            self._touched.pop(cluster.key, None)
            if cluster.stored:
                self._forgotten.add(cluster.key)

    @property
    def has_changes(self) -> bool:
        """A cluster was created, generalised, merged or evicted since the last `take_*` (matches do not
        count)."""
        return bool(self._changed or self._forgotten)

    def take_changed(self) -> list[Cluster]:
        """The clusters created, generalised, or matched with an old saved `last_seen` since the last call
        (only with `track_changes`)."""
        changed = {**self._touched, **self._changed}
        self._changed.clear()
        self._touched.clear()
        return list(changed.values())

    def take_forgotten(self) -> set[str]:
        """The keys of the clusters evicted or merged since the last call (only with `track_changes`)."""
        forgotten = set(self._forgotten)
        self._forgotten.clear()
        return forgotten

    def take_merged(self) -> list[tuple[str, str]]:
        """(merged key, the key it merged into) for every merge since the last call, in order."""
        merged = list(self._merged)
        self._merged.clear()
        return merged

    def restore(self, saved: Iterable[SavedCluster]) -> int:
        """Bring saved clusters back within `max_clusters`, in their order; returns how many were skipped
        (malformed, a key already present, or over the bound), each logged. Over the bound, the most
        recently seen are kept, and the others are forgotten (`take_forgotten`) as if evicted."""
        known = {key for order in self._by_length.values() for key in order}
        skipped = 0
        parsed: list[Cluster] = []
        for item in saved:
            try:
                cluster = Cluster.from_saved(item)
            except ValueError as exc:
                log.warning("skipped the saved template cluster %r: %s", item.key[:80], exc)
                skipped += 1
                continue
            if cluster.key in known:
                log.warning("skipped the saved template cluster %r: a duplicate key", item.key[:80])
                skipped += 1
                continue
            known.add(cluster.key)
            parsed.append(cluster)
        room = {n: self.max_clusters - len(order) for n, order in self._by_length.items()}
        kept: list[Cluster] = []
        for cluster in sorted(parsed, key=lambda c: c.last_seen, reverse=True):
            length = len(cluster.tokens)
            free = room.get(length, self.max_clusters)
            if free <= 0:
                log.warning("skipped the saved template cluster %r: over the bound", cluster.key[:80])
                skipped += 1
                cluster.evicted = True
                if self.track_changes:
                    self._forgotten.add(cluster.key)  # its row goes with the next save
                continue
            room[length] = free - 1
            kept.append(cluster)
        for cluster in reversed(kept):  # the least recently seen gets the oldest place in the LRU order
            self._matches += 1
            cluster.used = self._matches
            self._by_length.setdefault(len(cluster.tokens), OrderedDict())[cluster.key] = cluster
            self._place(cluster)
        return skipped

    def _match(self, tokens: tuple[str, ...]) -> Cluster | None:
        if not tokens or len(tokens) > MAX_TOKENS:
            return None
        best: Cluster | None = None
        best_score = -1.0
        for key in self._bucket_keys(tokens):
            bucket = self._buckets.get(key)
            if bucket is None:
                continue
            for cluster in bucket.candidates(tokens):
                score = cluster.similarity(
                    tokens, max(self.similarity, best_score), self.settled_after, self.settled_words_after
                )
                if score > best_score:
                    best, best_score = cluster, score
        if best is not None and best_score >= self.similarity:
            return best
        return None

    def __len__(self) -> int:
        return sum(len(order) for order in self._by_length.values())


def _filter_words(cluster: Cluster) -> tuple[list[Word], int]:
    """The cluster's words and the number of its loose positions, as bot.cluster_index defines them."""
    words: list[Word] = []
    loose = 0
    learned = cluster.learned
    for i, token in enumerate(cluster.tokens):
        if token.isalpha():  # the common case, without a look-up in `letters`' cache
            if i not in learned:
                words.append((i, token))
            continue
        if i in learned or not letters(token) or is_json_key(token):
            continue
        if WILDCARD in token:
            loose += 1
        else:
            words.append((i, token))
    return words, loose


def _resolved(cluster: Cluster) -> Cluster:
    while cluster.merged_into is not None:
        cluster = cluster.merged_into
    return cluster


__all__ = [
    "DEFAULT_DEPTH",
    "DEFAULT_MAX_BUCKET",
    "DEFAULT_MAX_CACHE",
    "DEFAULT_MAX_CLUSTERS",
    "DEFAULT_MERGE_AFTER",
    "DEFAULT_SETTLED_AFTER",
    "DEFAULT_SETTLED_WORDS_AFTER",
    "DEFAULT_SIMILARITY",
    "FIELD_NAMES",
    "MAX_MERGE_TOKENS",
    "MAX_TOKENS",
    "ONE_OFF_SIZE",
    "SMALL_BUCKET",
    "TOUCH_INTERVAL_S",
    "WILDCARD",
    "Cluster",
    "SavedCluster",
    "TemplateClusters",
    "tokens_of",
]
