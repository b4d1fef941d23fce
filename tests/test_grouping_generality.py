"""Grouping that holds on formats nobody tuned for: headers learned per file, structured lines, variables
found by evidence within the file, and a cluster index whose cost does not grow with the clusters."""

from __future__ import annotations

import random
import string
from pathlib import Path

import pytest

from bot.clusters import Cluster, TemplateClusters
from bot.grouping import Grouper, scan_file, scan_lines
from bot.header_infer import head_lines, learn
from bot.models import LogRecord
from bot.structured import structured
from tests.bench import formats


@pytest.mark.parametrize("name", formats.NAMES)
def test_synthetic_formats_group_as_their_generator_intended(name: str, tmp_path: Path) -> None:
    assert formats.score(name, tmp_path) == 1.0


def _write(tmp_path: Path, lines: list[str]) -> Path:
    log = tmp_path / "app.log"
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return log


def test_a_pipe_separated_header_is_learned_from_the_file(tmp_path: Path) -> None:
    rng = random.Random(1)
    lines = [
        f"20261203-10:{i // 60 % 60:02d}:{i % 60:02d}:{rng.randrange(1000)}|{rng.choice(('Step_A', 'Step_B'))}|"
        f"{rng.randrange(10**7, 10**8)}|{rng.choice(('onTick', 'onReport', 'flush'))} {rng.randrange(9999)}"
        for i in range(300)
    ]
    model = learn(head_lines(_write(tmp_path, lines)))
    assert model.cut("20261203-11:00:00:5|Step_Z|12345678|onTick 17") == "onTick 17"
    assert model.cut("a continuation without the header") is None
    assert model.cut("20261203-11:00:00:5|Step_Z|12345678|") is None  # nothing left: no message to cut


def test_a_program_column_may_take_an_extra_field_before_the_separator(tmp_path: Path) -> None:
    rng = random.Random(2)
    programs = ("app.exe", "svc.exe *64", "tool.exe")  # the second on one line in 20
    lines = [
        f"[12.03 10:{i % 60:02d}:{rng.randrange(60):02d}] {rng.choices(programs, (10, 1, 9))[0]} - "
        + rng.choice((f"peer{rng.randrange(9)} said {i}", f"closing after {i} s", "retry later"))
        for i in range(300)
    ]
    model = learn(head_lines(_write(tmp_path, lines)))
    assert model.cut("[12.03 11:00:00] svc.exe *64 - peer3 said 9") == "peer3 said 9"
    assert model.cut("[12.03 11:00:00] app.exe - peer3 said 9") == "peer3 said 9"


def test_a_value_that_fills_the_head_is_not_taken_for_header(tmp_path: Path) -> None:
    rng = random.Random(3)
    lines = [
        f"[12.03 10:00:{i % 60:02d}] app - db1.example.com:5432 query took {rng.randrange(99)} ms"
        for i in range(300)
    ]
    model = learn(head_lines(_write(tmp_path, lines)))
    assert model.cut("[12.03 10:00:01] app - db1.example.com:5432 query took 3 ms") == (
        "db1.example.com:5432 query took 3 ms"
    )


def test_columns_that_do_not_anchor_keep_their_place_before_an_anchor(tmp_path: Path) -> None:
    rng = random.Random(4)
    lines = [
        f"api.log.1 2026-12-03 10:00:{i % 60:02d}.{rng.randrange(1000):03d} {rng.randrange(99999)} INFO "
        f"api.server [req-{rng.randrange(16**8):08x} {rng.randrange(16**6):06x} - -] "
        + rng.choice((f"GET /v2/{i} returned 200", "VM started", f"took {i} ms"))
        for i in range(300)
    ]
    model = learn(head_lines(_write(tmp_path, lines)))
    assert (
        model.cut("api.log.1 2026-12-03 11:00:00.5 7 INFO api.server [req-1f a - -] VM started")
        == "VM started"
    )


def test_too_few_lines_learn_no_header(tmp_path: Path) -> None:
    assert learn(head_lines(_write(tmp_path, ["2026-12-03 10:00:00 INFO up"] * 5))).length == 0


def test_structured_lines_give_their_message_and_level() -> None:
    json_line = structured('{"ts": "2026-12-03T10:00:00Z", "level": "error", "msg": "db down", "n": 3}')
    assert json_line is not None and (json_line.message, json_line.level) == ("db down", "error")
    logfmt = structured('ts=2026-12-03T10:00:00Z level=warn msg="disk \\"data\\" full" pct=97')
    assert logfmt is not None and (logfmt.message, logfmt.level) == ('disk "data" full', "warn")
    assert structured("user=bob logged in from the console") is None  # free text after a pair
    assert structured("[1, 2, 3]") is None
    assert structured('{"no": "message field"}') is None


def test_a_json_error_line_is_an_error_grouped_by_its_message() -> None:
    grouper = Grouper()

    def fp(text: str) -> tuple[str, bool, str]:
        got = grouper.fingerprint(LogRecord(service="svc", source="test", text=text))
        return got.key, got.is_error, got.template

    a = fp('{"level": "error", "msg": "payment 1234 declined", "trace": "ab12"}')
    b = fp('{"level": "error", "msg": "payment 98 declined", "trace": "cd34"}')
    c = fp('{"level": "info", "msg": "payment 98 accepted", "trace": "cd34"}')
    assert a[1] and a[2] == "payment <num> declined" and a[0] == b[0]
    assert not c[1] and c[0] != a[0]


def test_evidence_merges_a_word_variable_but_not_two_values() -> None:
    clusters = TemplateClusters(merge_after=5)
    users = ("alice", "bob", "carol", "dave", "erin", "frank")
    first = [clusters.assign(f"{u} logged out") for u in users[:4]]
    assert len({c.key for c in first}) == 4  # 2 of 3 words differ: no similarity, no evidence yet
    merged = clusters.assign(f"{users[4]} logged out")  # the fifth value is evidence of a variable
    assert merged.template == "<*> logged out"
    assert clusters.assign(f"{users[5]} logged out") is merged  # a new value is found after the merge
    assert {old for old, _ in clusters.take_merged()} | {merged.key} == {f"{u} logged out" for u in users[:5]}
    shutdown = clusters.assign("cupsd shutdown succeeded")
    assert clusters.assign("cupsd startup succeeded") is not shutdown


def test_a_scan_counts_the_lines_before_a_merge_with_the_merged_group() -> None:
    lines = [
        f"2026-12-03 10:00:0{i} INFO {u} logged out"
        for i, u in enumerate(("al", "bo", "cy", "di", "ed", "fa"))
    ]
    result = scan_lines(lines, errors_only=False)
    assert len(result.groups) == 1 and result.groups[0].count == 6
    assert len({key for _, key in result.line_groups}) == 1


def test_a_merge_in_the_daemon_deletes_the_merged_rows(tmp_path: Path) -> None:
    from bot.store import Store

    store = Store.open(tmp_path / "state.db")
    grouper = Grouper(persistence=store)
    keys = [
        grouper.fingerprint(LogRecord(service="svc", source="t", text=f"ERROR {u} lost the lock")).key
        for u in ("al", "bo", "cy", "di", "ed", "fa")
    ]
    assert grouper.save_pending()
    saved = store.load_clusters("svc", True)
    store.close()
    assert [c.template for c in saved] == ["<*> lost the lock"]
    assert keys[-1] == keys[-2] == keys[0] != keys[1]  # the first cluster survives; later lines get its key
    assert grouper.canonical_key(keys[1]) == keys[0]  # and a merged key stands for it


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(7))


def test_matching_among_thousands_of_clusters_looks_at_a_few(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(5)
    clusters = TemplateClusters(max_clusters=10_000, max_cache=0)
    events = [[_word(rng) for _ in range(rng.randrange(4, 9))] for _ in range(5000)]
    made = [clusters.assign(" ".join(e)) for e in events]
    assert len(clusters) == 5000 and len({c.key for c in made}) == 5000
    compared = 0
    similarity = Cluster.similarity

    def counting(self: Cluster, tokens: tuple[str, ...], *rest: float) -> float:
        nonlocal compared
        compared += 1
        return similarity(self, tokens, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(Cluster, "similarity", counting)
    for i in rng.sample(range(5000), 300):
        line = list(events[i])
        line[-1] = str(rng.randrange(10**6))  # a value where a word was: still that event (n-1 of n)
        if len(line) >= 5:
            assert clusters.assign(" ".join(line)) is made[i]
    assert compared <= 300 * 3  # one bucket or two per template, not the 5000 clusters


def test_the_learned_level_column_says_which_lines_are_errors(tmp_path: Path) -> None:
    rng = random.Random(6)
    lines = [
        f"12-03 10:00:{i % 60:02d}.{rng.randrange(1000):03d} {rng.randrange(100, 9999):5d} {rng.randrange(100, 9999):5d} "
        + rng.choice(("I Wifi: scan done", "D Audio: route changed", "E Camera: open failed"))
        for i in range(300)
    ]
    result = scan_file(_write(tmp_path, lines))  # errors only: one letter, as logcat writes it
    assert [g.template for g in result.groups] == ["Camera: open failed"]


def test_evidence_never_merges_keyed_or_bracketed_values() -> None:
    clusters = TemplateClusters(merge_after=3)
    kinds = ("[REDACTED:aws_key]", "[REDACTED:github_pat]", "[REDACTED:password]", "user=root", "user=bob")
    assert len({clusters.assign(f"upstream failed with {kind}").key for kind in kinds}) == len(kinds)
