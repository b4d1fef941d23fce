"""Grouping quality: template clusters, the buffer-search error scan, and GA floors on two Loghub sets."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.clusters import TemplateClusters, tokens_of
from bot.errors import SourceError
from bot.grouping import Grouper, format_scan, scan_errors, scan_file
from bot.models import LogRecord
from tests.bench import loghub

SAMPLES = sorted((Path(__file__).parent / "data" / "logs").glob("*.log"))


def record(text: str, service: str = "svc") -> LogRecord:
    return LogRecord(service=service, source="test", text=text)


def test_lines_differing_in_a_plain_word_share_a_cluster() -> None:
    clusters = TemplateClusters()
    first = clusters.assign("session closed for user cyrus")
    assert clusters.assign("session closed for user news") is first
    assert first.template == "session closed for user <*>"
    assert first.key == "session closed for user cyrus"  # the key never changes


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("cupsd shutdown succeeded", "cupsd startup succeeded"),  # 2 of 3 words: too different
        ("open through proxy HTTPS", "open through proxy SOCKS<num>"),  # a variable vs a word: shape
        ("login failed user=root", "login failed user=guest"),  # punctuation: structure, not a value
        ("job started", "job started now"),  # token counts differ
    ],
)
def test_different_events_stay_apart(one: str, other: str) -> None:
    clusters = TemplateClusters()
    assert clusters.assign(one) is not clusters.assign(other)


def test_tokens_turn_variable_parts_into_wildcards() -> None:
    assert tokens_of("onExtend:<num> <num> wl0: x=") == ("onExtend:<*>", "<*>", "wl<*>:", "x=<*>")
    assert tokens_of("sent <size> (<size>) ok ()") == ("sent", "<*>", "ok", "(<*>)")


def test_bad_similarity_is_refused() -> None:
    with pytest.raises(ValueError, match="similarity"):
        TemplateClusters(similarity=0.0)


def test_cluster_memory_is_bounded() -> None:
    clusters = TemplateClusters(max_clusters=3, max_cache=5)
    for i in range(50):
        word = chr(97 + i // 26) + chr(97 + i % 26)
        clusters.assign(f"{word} {word} happened now")
    assert len(clusters) == 3


def test_grouper_keys_plain_errors_by_cluster_but_keeps_trace_and_access_keys() -> None:
    grouper = Grouper()
    a = grouper.fingerprint(record("2026-11-26 06:00:00 ERROR db: connection to primary refused"))
    b = grouper.fingerprint(record("2026-11-26 06:00:01 ERROR db: connection to replica refused"))
    assert a.key == b.key and b.template == "db: connection to <*> refused"
    other_service = grouper.fingerprint(
        record("2026-11-26 06:00:01 ERROR db: connection to replica refused", "x")
    )
    assert other_service.key != a.key
    info = grouper.fingerprint(record("2026-11-26 06:00:02 INFO db: connection to replica refused"))
    assert not info.is_error and info.key != a.key
    access = grouper.fingerprint(record('1.2.3.4 - - [26/Nov/2026 06:00:00] "GET /a/1 HTTP/1.1" 500 -'))
    assert access.template == "HTTP 500 GET /a/<id>"


@pytest.mark.parametrize("log", SAMPLES, ids=lambda p: p.name)
def test_buffer_scan_finds_the_same_error_groups_as_the_line_scan(log: Path) -> None:
    full = scan_file(log)
    fast = scan_errors(log)
    assert [(g.key, g.count, g.first_line, g.sample) for g in fast.groups] == [
        (g.key, g.count, g.first_line, g.sample) for g in full.groups
    ]
    error_keys = {g.key for g in full.groups}
    assert fast.line_groups == [(n, k) for n, k in full.line_groups if k in error_keys]
    assert (fast.lines, fast.error_records, fast.complete) == (full.lines, full.error_records, False)
    assert "only errors assembled" in format_scan(fast)


def test_buffer_scan_handles_edges(tmp_path: Path) -> None:
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    assert scan_errors(empty).lines == 0
    hostile = tmp_path / "hostile.log"
    hostile.write_bytes(
        b"\x00\xff\xfe ok\n"
        + b"A" * 100_000
        + b" ERROR huge\n"
        + b"\x1b[31mERROR red\x1b[0m\nlast ERROR unterminated"
    )
    result = scan_errors(hostile, max_line_bytes=1000)
    assert result.lines == 4
    assert sorted(n for g in result.groups for n in [g.first_line]) == [3, 4]  # the capped line is no error
    with pytest.raises(SourceError, match="not found"):
        scan_errors(tmp_path / "missing.log")


needs_loghub = pytest.mark.skipif(
    not loghub.available(), reason=f"Loghub-2k data not found in {loghub.DATA_DIR} (kept outside the project)"
)


@needs_loghub
@pytest.mark.parametrize(
    ("name", "floor"), [("Linux", 0.90), ("Proxifier", 0.95), ("HealthApp", 0.95), ("Mac", 0.80)]
)
def test_grouping_accuracy_floor_on_loghub(name: str, floor: float) -> None:
    assert loghub.score(name).healbot >= floor


def test_grouping_accuracy_definition() -> None:
    assert loghub.grouping_accuracy(["a", "a", "b"], [1, 1, 2]) == 1.0
    assert loghub.grouping_accuracy(["a", "a", "a"], [1, 1, 2]) == 0.0
    assert loghub.grouping_accuracy(["a", "b", "c"], [1, 1, 2]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="predictions"):
        loghub.grouping_accuracy(["a"], [1, 2])


class _FakeScores:
    """GA by set and similarity: three sets like 0.9, the fourth only 0.6."""

    def __init__(self) -> None:
        self.sets = [loghub.LoghubSet(name, Path(name), (), ()) for name in ("a", "b", "c", "d")]

    def ga(self, data: loghub.LoghubSet, config: tuple[tuple[str, float], ...]) -> float:
        similarity = dict(config)["similarity"]
        likes = 0.6 if data.name == "d" else 0.9
        return 1.0 if similarity == likes else 0.5


def test_leave_one_set_out_scores_each_set_with_what_the_others_chose() -> None:
    result = loghub.leave_one_out(_FakeScores(), ("similarity",))  # type: ignore[arg-type]
    assert {name: pick for name, (_ga, pick) in result.per_set.items()} == {
        "a": (("similarity", 0.9),),
        "b": (("similarity", 0.9),),
        "c": (("similarity", 0.9),),
        "d": (("similarity", 0.9),),  # tuned on a, b and c
    }
    assert result.per_set["d"][0] == 0.5 and result.loso == pytest.approx(3.5 / 4)
    assert result.tuned == pytest.approx(3.5 / 4) and result.spread == pytest.approx(0.0)
    assert result.shipped == pytest.approx(0.5)  # the shipped 0.8 suits none of them


def test_a_flood_of_one_off_templates_kept_every_evicted_cluster_in_the_full_cache() -> None:
    """Regression: a cache that stopped taking templates once full kept its first ones, and through them
    every cluster evicted since; it now holds at most `max_cache` recent templates and no evicted cluster
    beyond them."""
    clusters = TemplateClusters(max_clusters=3, max_cache=10)
    made = []
    for i in range(200):
        word = chr(97 + i // 26) + chr(97 + i % 26)
        made.append(clusters.assign(f"{word} {word} happened now"))
    assert len(clusters) == 3
    held = set(map(id, clusters._cache.values()))
    assert len(clusters._cache) <= 10
    assert all(id(c) not in held for c in made[:-10])  # the early, evicted clusters are not held
    repeat = clusters.assign("zz zz happened now")
    assert clusters.assign("zz zz happened now") is repeat  # the cache still serves exact repeats
