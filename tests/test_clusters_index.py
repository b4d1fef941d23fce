"""The second level of the template clusters' index (bot.cluster_index) finds what comparing a template
with every cluster of its buckets finds, and a flood of new kinds in one bucket compares with few clusters."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from bot.cluster_index import needed_words
from bot.clusters import WILDCARD, Cluster, TemplateClusters, _filter_words, tokens_of
from tests.bench.bench_high_cardinality import _distinct

# plain words, values, keys, JSON keys, tokens without letters, and words holding a variable (`loose`)
VOCABULARY = [f"w{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(120)] + [
    "<num>",
    "id<num>",
    "user=root",
    "user=guest",
    '"latency":',
    "-",
    "|",
    "a<num>b",
    "[REDACTED:key]",
    "port",
]


def templates(seed: int, count: int) -> Iterator[str]:
    """Events of a few shapes sharing their first words, each seen with 0 to 4 words changed: many
    templates land near the similarity threshold of the event they come from."""
    rnd = random.Random(seed)
    events = [
        ["ERROR", "shop", *(rnd.choice(VOCABULARY) for _ in range(rnd.choice([2, 3, 4, 5, 6, 8, 10])))]
        for _ in range(150)
    ]
    for _ in range(count):
        words = list(rnd.choice(events))
        for _ in range(rnd.choice([0, 1, 1, 2, 2, 3, 4])):
            words[rnd.randrange(len(words))] = rnd.choice(VOCABULARY)
        yield " ".join(words)


def brute_force(clusters: TemplateClusters, tokens: tuple[str, ...]) -> Cluster | None:
    """The cluster `_match` must find: every cluster of the template's buckets compared, in bucket order,
    the first of the highest similarity when it reaches the threshold."""
    best: Cluster | None = None
    best_score = -1.0
    for key in clusters._bucket_keys(tokens):
        bucket = clusters._buckets.get(key)
        for cluster in bucket.members.values() if bucket is not None else ():
            score = cluster.similarity(tokens)
            if score > best_score:
                best, best_score = cluster, score
    return best if best_score >= clusters.similarity else None


@pytest.mark.parametrize(
    "options",
    [
        {"similarity": 0.8},
        {"similarity": 0.5, "merge_after": 0},
        {"similarity": 0.7, "max_bucket": 8, "max_cache": 0},
        {"similarity": 0.9, "depth": 1},
        {"similarity": 1.0, "max_cache": 0},
    ],
)
def test_the_second_level_index_finds_what_a_brute_force_search_finds(options: dict[str, float]) -> None:
    clusters = TemplateClusters(**options)  # type: ignore[arg-type]
    matched = 0
    for n, template in enumerate(templates(seed=13, count=1500)):
        tokens = tokens_of(template)
        expected = brute_force(clusters, tokens)
        assert clusters._match(tokens) is expected, (n, template)
        matched += expected is not None
        clusters.assign(template, float(n))
    assert matched > 100  # the search was put to the test: many templates found a cluster


def test_a_template_holding_fewer_words_than_needed_never_reaches_the_threshold() -> None:
    rnd = random.Random(7)
    below = 0
    for n, template in enumerate(templates(seed=7, count=4000)):
        similarity = (0.5, 0.7, 0.8, 0.9, 1.0)[n % 5]
        cluster = Cluster(key=template, tokens=list(tokens_of(template)))
        for i in rnd.sample(range(len(cluster.tokens)), rnd.randrange(3)):
            cluster.tokens[i] = WILDCARD
            cluster.learned.add(i)
        other = list(tokens_of(template))
        for _ in range(rnd.randrange(5)):
            other[rnd.randrange(len(other))] = tokens_of(rnd.choice(VOCABULARY))[0]
        words, loose = _filter_words(cluster)
        held = sum(1 for i, word in words if other[i] == word)
        if held < needed_words(len(words), loose, similarity):
            assert cluster.similarity(tuple(other)) < similarity, (cluster, other)
            below += 1
    assert below > 1000


def test_a_bucket_evicts_its_least_recently_matched_cluster() -> None:
    clusters = TemplateClusters(max_bucket=6, max_cache=10)
    for n, template in enumerate(templates(seed=5, count=2000)):
        clusters.assign(template, float(n))
        for bucket in clusters._buckets.values():
            assert bucket.least_recent() is min(bucket.members.values(), key=lambda c: c.used)
    assert clusters.evictions > 100


def test_a_flood_of_new_kinds_in_one_bucket_compares_few_clusters(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression (issue 13): 200 k distinct errors of one service all fell into the bucket of their first
    word, and each new one was compared with all 256 clusters there: 1,014 lines/s in the daemon."""
    compared = 0
    similarity = Cluster.similarity

    def counted(self: Cluster, tokens: tuple[str, ...], *rest: Any) -> float:
        nonlocal compared
        compared += 1
        return similarity(self, tokens, *rest)

    monkeypatch.setattr(Cluster, "similarity", counted)
    clusters = TemplateClusters()
    lines = _distinct(0, 3000).splitlines()
    for n, line in enumerate(lines):
        clusters.assign(line, float(n))
    # the bucket stayed full: before, each line was compared with its 256 clusters
    assert clusters.evictions > 2000
    assert compared < len(lines) // 10


def test_a_template_finds_its_own_cluster_after_a_merge_moved_it_out_of_its_buckets() -> None:
    """Regression: the merge made every position of the survivor a variable, so it left the bucket of its
    only word; once out of the cache, its own template made a second cluster of the same key."""
    clusters = TemplateClusters(merge_after=3, max_cache=0)
    first = clusters.assign("x=1 y=2 alpha")
    clusters.assign("x=1 y=2 beta")
    survivor = clusters.assign("x=1 y=2 gamma")
    assert survivor is first and first.template == "x=<*> y=<*> <*>"
    again = clusters.assign("x=1 y=2 alpha")
    assert again is first and again.size == 4
    assert len(clusters) == 1
