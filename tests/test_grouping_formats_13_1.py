"""Classes of input the widened held-out-style proxy (issue 13.1: logfmt after a collector's prefix, JSON
fragments, Windows paths, templates with two word-valued variables) found grouped wrongly, one test each."""

from __future__ import annotations

import itertools

from bot.clusters import TemplateClusters
from bot.grouping import Grouper
from bot.masking import mask
from bot.record_types import LogRecord
from bot.structured import structured, structured_in


def _keys(lines: list[str]) -> list[str]:
    grouper = Grouper()
    keys = [grouper.fingerprint(LogRecord(service="svc", source="test", text=line)).key for line in lines]
    return [grouper.canonical_key(key) for key in keys]


def test_logfmt_after_a_collector_prefix_is_not_one_group_of_quoted_strings() -> None:
    prefix = "Dec  5 10:00:0{i} web-1 api[12{i}]: ts=2026-12-05T10:00:0{i}Z level={level} caller=db.go:1"
    lines = [
        prefix.format(i=0, level="info") + ' msg="pool ready with 12 conns"',
        prefix.format(i=1, level="error") + ' msg="query failed on shard 7"',
        prefix.format(i=2, level="info") + ' msg="pool ready with 3 conns"',
    ]
    keys = _keys(lines)
    assert keys[0] == keys[2] != keys[1]
    found = structured_in(lines[1])
    assert found is not None and (found.message, found.level) == ("query failed on shard 7", "error")


def test_json_after_a_stamp_gives_its_message_and_level() -> None:
    found = structured_in('2026-12-05T10:00:00Z {"level": "warn", "msg": "disk 91% full", "disk": "sda"}')
    assert found is not None and (found.message, found.level, found.fields) == (
        "disk 91% full",
        "warn",
        ("disk",),
    )
    assert structured_in("2026-12-05 user=bob logged in from the console") is None  # free text after pairs


def test_the_names_of_the_other_fields_tell_two_events_with_one_message_apart() -> None:
    lines = [
        f'ts=2026-12-05T10:00:0{i}Z level=info msg="retry scheduled" {extra}'
        for i, extra in enumerate(("attempt=3 delay=2s", "peer=db1 backoff=4s", "attempt=4 delay=8s"))
    ]
    keys = _keys(lines)
    assert keys[0] == keys[2] != keys[1]


def test_field_names_shared_by_every_line_do_not_merge_twins_that_differ_in_one_word() -> None:
    lines = [
        f'ts=2026-12-05T10:00:{i:02d}Z level=debug caller=c.go:2 msg="cache {word} for key {i}" req_id=ab{i} dur={i}ms'
        for i, word in enumerate(("hit", "miss") * 3)
    ]
    keys = _keys(lines)
    assert len(set(keys[0::2])) == 1 and len(set(keys[1::2])) == 1 and keys[0] != keys[1]


def test_an_escaped_backslash_in_a_logfmt_value_is_one_backslash() -> None:
    found = structured('ts=1 level=info msg="open C:\\\\Temp\\\\a.log" size=2')
    assert found is not None and found.message == "open C:\\Temp\\a.log"


def test_a_windows_path_of_one_segment_is_masked_like_a_longer_one() -> None:
    assert mask("open D:\\Quota.dll then C:\\Windows\\System32\\x.dll") == "open <path> then <path>"


def test_a_boolean_value_of_a_key_is_masked() -> None:
    assert (
        mask('{"ok": true, "cached":false} retry=True enabled')
        == '{"ok": <bool>, "cached":<bool>} retry=<bool> enabled'
    )


def test_two_word_valued_variables_merge_on_evidence_of_one_off_clusters() -> None:
    clusters = TemplateClusters(merge_after=5)
    pairs = (("alice", "web"), ("bob", "db"), ("carol", "cache"), ("dave", "queue"), ("erin", "mail"))
    keys = {clusters.assign(f"session opened user={u} on {h} by sshd").key for u, h in pairs}
    into = dict(clusters.take_merged())
    assert len({into.get(key, key) for key in keys}) == 1
    assert clusters.assign("session opened user=frank on backup by sshd").template == (
        "session opened <*> on <*> by sshd"
    )


def test_frequent_clusters_that_differ_in_two_words_are_events_not_variables() -> None:
    # state transitions: each pair of words is its own event and repeats before the next one shows, so the
    # two positions hold no variable, whatever the count of clusters
    clusters = TemplateClusters(merge_after=5)
    states = ("NEW", "QUEUED", "ASSIGNED", "RUNNING", "DONE", "CLEANUP")
    keys = set()
    for old, new in itertools.pairwise(states):
        for _ in range(3):
            keys.add(clusters.assign(f"task moved from {old} to {new} state").key)
    assert not clusters.take_merged() and len(keys) == len(states) - 1


def test_a_cluster_a_generalised_one_now_covers_is_merged_into_it() -> None:
    clusters = TemplateClusters(merge_after=5)
    bob = clusters.assign("login ok user=bob from portal")
    alice = clusters.assign("login ok user=alice1 from portal")
    assert alice is not bob  # a word value against another: no similarity yet
    carol = clusters.assign("login ok user=carol7 from portal")  # shows the position to vary
    assert carol is alice and carol.template == "login ok <*> from portal"
    assert dict(clusters.take_merged()) == {bob.key: alice.key}  # bob's line would match it now
    assert clusters.assign("login ok user=bob from portal") is carol and carol.size == 4


def test_a_near_twin_seen_early_is_another_event_once_its_word_held_over_two_lines() -> None:
    clusters = TemplateClusters()
    started = {clusters.assign(f"replica sync started for shard {n} on node").key for n in range(2)}
    stopped = clusters.assign("replica sync stopped for shard 7 on node")
    assert stopped.key not in started  # `started` held over two lines: a constant, its twin another event
    # a word with a value in it takes settled_after lines to count as constant: `task_<*>_m` / `task_<*>_r`
    kinds = {clusters.assign(f"attempt task_{n}_m done on node").key for n in range(3)}
    assert clusters.assign("attempt task_4_r done on node").key in kinds


def test_a_short_hex_id_of_seven_digits_is_masked_as_hex() -> None:
    # a git short hash or a short container id: `f50d866` and `7e26735` were `f<num>d<num>`, `<num>e<num>`
    assert mask("deploy f50d866 over 7e26735 in 1234567 steps") == "deploy <hex> over <hex> in <num> steps"
    assert mask("state deadbee cafe") == "state deadbee cafe"  # letters only: a word
