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
"""

from __future__ import annotations

import functools
import logging
import re
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bot.cluster_index import Bucket, Word, needed_words

log = logging.getLogger(__name__)

WILDCARD = "<*>"
DEFAULT_SIMILARITY = 0.8
DEFAULT_MAX_CLUSTERS = 2000  # per token count
DEFAULT_MAX_CACHE = 20_000  # exact templates; emptied when full, so it holds recent ones only
DEFAULT_DEPTH = 2  # leading constant tokens of a template whose buckets are searched for its cluster
DEFAULT_MERGE_AFTER = 5  # clusters that differ in one word only, and only there, before they are merged
DEFAULT_MAX_BUCKET = 256  # clusters compared with one template at most (the least recently used goes)
MAX_MERGE_TOKENS = 40  # longer templates are never merged on evidence
ONE_OFF_SIZE = 2  # mean lines per cluster, at most, of the clusters a merge on two positions takes
SMALL_BUCKET = 64  # a bucket this small is searched whole for clusters a new one may merge with
MAX_TOKENS = 120  # longer templates are only matched exactly
DEFAULT_SETTLED_AFTER = 20  # lines holding one word with a value in it (`job_<*>`) before it is constant
DEFAULT_SETTLED_WORDS_AFTER = 2  # lines holding one plain word at a position before it is constant
TOUCH_INTERVAL_S = 3600.0  # a matched cluster's `last_seen` is saved again once it is this much older

FIELD_NAMES = "(fields:"  # opens the token naming a structured line's other fields (bot.grouping)
_VARIABLE_PART = re.compile(
    r"\d+|<(?:num|hex|ip|host|url|email|uuid|path|str|duration|size|datetime|request|id|query|mac|token|bool|\*)>"
)
# An empty value is a value: "()", "[]", "key=" at the end of a token.
_EMPTY_VALUE = re.compile(r"(?<=\()(?=\))|(?<=\[)(?=\])|(?<==)(?=\s|$)")
_STRUCTURED = re.compile(r"[=\[\]{}]")
_GAP = "\x00"  # the position a skeleton leaves out
_PLAIN_WORD = re.compile(r"^(?:<\*>|[A-Za-z_][\w.-]*)$")


@functools.lru_cache(maxsize=65536)
def _is_plain(token: str) -> bool:
    return _PLAIN_WORD.match(token) is not None


@functools.lru_cache(maxsize=65536)
def _is_word(token: str) -> bool:
    """A plain word, a word with a number in it (`user12`) or a list of words (`admin,dev`): what a
    variable that names things looks like."""
    return any(pattern.match(token) for pattern in (_PLAIN_WORD, _WORD_WITH_VARIABLE, _WORD_LIST))


@functools.lru_cache(maxsize=65536)
def _letters(token: str) -> str:
    return "".join(c for c in token.replace(WILDCARD, " ") if c.isalpha())


_KEYED_WORD = re.compile(r"^([\w.-]+=)[A-Za-z_][\w.,-]*(?:<\*>[\w.,-]*)*$")
_WORD_WITH_VARIABLE = re.compile(r"^[A-Za-z_][\w.-]*(?:<\*>[\w.-]*)+$")
_WORD_LIST = re.compile(r"^[A-Za-z_][\w.-]*(?:,[A-Za-z_][\w.-]*)+$")


def _merge_slot(token: str) -> str | None:
    """The gap a token leaves in the skeletons evidence merges on: `_GAP` for a word (`alice`, `user12`),
    `key=` and the gap for a word value (`user=alice`); None where no merge may happen: a variable, a
    value of another shape, a bracketed kind (`[REDACTED:key]`)."""
    if token == WILDCARD or token.startswith(FIELD_NAMES):
        return None
    if _STRUCTURED.search(token) is None:
        return _GAP if WILDCARD not in token or _WORD_WITH_VARIABLE.match(token) else None
    keyed = _KEYED_WORD.match(token)
    return keyed.group(1) + _GAP if keyed is not None else None


def _is_json_key(token: str) -> bool:
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
                if _letters(mine) and not _is_json_key(mine):
                    same += 1
                    compared += 1
                continue
            if WILDCARD in mine and WILDCARD in theirs:
                if _letters(mine) == _letters(theirs):
                    continue  # two values written alike (`<*>`, `<<*>`): no word differs
            elif not (_is_word(mine) and _is_word(theirs)):
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
            slot = _merge_slot(token)
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
            at = next(i for i, token in enumerate(skeleton) if token.endswith(_GAP))
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
            at = next(i for i, token in enumerate(skeleton) if token.endswith(_GAP))
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
                differ = _differing_slots(tokens, other.tokens)
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
        if token.isalpha():  # the common case, without a look-up in `_letters`' cache
            if i not in learned:
                words.append((i, token))
            continue
        if i in learned or not _letters(token) or _is_json_key(token):
            continue
        if WILDCARD in token:
            loose += 1
        else:
            words.append((i, token))
    return words, loose


def _differing_slots(mine: Sequence[str], theirs: Sequence[str]) -> tuple[int, ...] | None:
    """The one or two positions where two templates of one length differ, when each holds there what a
    merge on evidence takes (`_merge_slot`, alike on both sides: two words, two word values of one key);
    a position either has learned (`<*>`) agrees with anything. None otherwise."""
    differ: list[int] = []
    for i, (a, b) in enumerate(zip(mine, theirs, strict=True)):
        if a == b or WILDCARD in (a, b):
            continue
        slot = _merge_slot(a)
        if slot is None or slot != _merge_slot(b) or len(differ) == 2:
            return None
        differ.append(i)
    return tuple(differ) if differ else None


def _resolved(cluster: Cluster) -> Cluster:
    while cluster.merged_into is not None:
        cluster = cluster.merged_into
    return cluster
