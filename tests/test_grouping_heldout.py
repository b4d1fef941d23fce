"""Classes of input the held-out-style generator (tests/bench/fuzz_formats.py) found grouped wrongly, one
test per class: addresses written `host:port`, MAC addresses, anonymous tokens the redaction replaced,
header columns of level abbreviations and bracketed groups, and word values of `key=value` pairs."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from bot.clusters import TemplateClusters
from bot.grouping import scan_file
from bot.header_infer import head_lines, learn
from bot.masking import mask
from tests.bench import fuzz_formats


def _write(tmp_path: Path, lines: list[str]) -> Path:
    log = tmp_path / "app.log"
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return log


def _groups(tmp_path: Path, lines: list[str]) -> list[str]:
    result = scan_file(_write(tmp_path, lines), errors_only=False)
    by_line = dict(result.line_groups)
    return [by_line[n] for n in range(1, len(lines) + 1)]


def test_host_port_is_masked_whatever_the_domain() -> None:
    assert mask("open csdnimg.cn:80 through proxy.cse.example.hk:5070") == "open <host> through <host>"
    assert mask("db-3:5432 web01:80 localhost:8080") == "<host> <host> <host>"
    assert mask("client=api.shop.de:443 done") == "client=<host> done"
    assert mask("10.0.0.1:80") == "<ip>"  # an address with a port stays an address


def test_a_source_file_and_line_is_not_taken_for_host_port() -> None:
    assert mask("at Foo.java:42 in main.go:7 (com.shop.Cart.java:12)") == (
        "at Foo.java:<num> in main.go:<num> (com.shop.Cart.java:<num>)"
    )
    assert mask("redis:6379") == "redis:<num>"  # one plain label: maybe a key, left to the clusters


def test_mac_addresses_are_masked() -> None:
    assert mask("link b8:58:d3:9b:6f:5e up, peer 00-1A-2B-3C-4D-5E") == "link <mac> up, peer <mac>"


def test_a_redacted_token_groups_with_a_masked_hex_in_the_same_place(tmp_path: Path) -> None:
    rng = random.Random(5)
    lines = [
        f"2026-12-03 10:00:{i % 60:02d} INFO cache lookup id={rng.randrange(16**12):012x} done"
        if i % 2
        else f"2026-12-03 10:00:{i % 60:02d} INFO cache lookup id={rng.randrange(16**32):032x} done"
        for i in range(60)
    ]
    assert len(set(_groups(tmp_path, lines))) == 1
    assert mask("[REDACTED:password] [REDACTED:hex_token]") == "[REDACTED:password] <token>"


def test_a_three_letter_level_column_is_learned(tmp_path: Path) -> None:
    rng = random.Random(6)
    lines = [
        f"2026-12-03T10:00:{i % 60:02d}Z {rng.choice(('INF', 'DBG', 'WRN', 'ERR'))} "
        + rng.choice((f"worker {rng.randrange(99)} ready", "cache warmed", f"took {rng.randrange(99)} ms"))
        for i in range(60)
    ]
    model = learn(head_lines(_write(tmp_path, lines)))
    assert model.ends_with_level
    assert model.split("2026-12-03T11:00:00Z WRN worker 3 ready") == ("worker 3 ready", "WARN")


def test_a_bracketed_column_with_and_without_digits_is_header(tmp_path: Path) -> None:
    rng = random.Random(7)
    threads = ("main", "pool-1-thread-3", "worker-12", "scheduler")
    lines = [
        f"2026-12-03 10:00:{i % 60:02d},123 [{rng.choice(threads)}] INFO Cache - "
        + rng.choice(
            (f"entry {rng.randrange(999)} loaded", "cache flushed", f"evicted {rng.randrange(9)} keys")
        )
        for i in range(60)
    ]
    model = learn(head_lines(_write(tmp_path, lines)))
    assert model.split("2026-12-03 11:00:00,5 [main] INFO Cache - entry 1 loaded") == (
        "entry 1 loaded",
        "INFO",
    )
    assert len(set(_groups(tmp_path, lines))) == 3


def test_a_request_group_or_its_placeholder_after_the_component_is_header(tmp_path: Path) -> None:
    rng = random.Random(8)

    def request() -> str:
        uuid = fuzz_formats._uuid(rng)
        return f"[req-{uuid} {rng.randrange(16**8):08x} - - -]" if rng.random() < 0.7 else "[-]"

    lines = [
        f"2026-12-03 10:00:{i % 60:02d}.{i:03d} {rng.randrange(100, 9999)} INFO api.server {request()} "
        + rng.choice(("volume attached", "volume detached", "quota checked"))
        for i in range(90)
    ]
    assert len(set(_groups(tmp_path, lines))) == 3


def test_word_values_of_one_key_merge_on_evidence_but_two_values_stay_apart() -> None:
    clusters = TemplateClusters(merge_after=5)
    users = ("alice", "bob", "carol", "dave", "erin", "frank")
    keys = {clusters.assign(f"login ok user={user} from portal").key for user in users}
    for merged, into in clusters.take_merged():
        keys.discard(merged)
        keys.add(into)
    assert len(keys) == 1
    lists = ("admin", "ops,dev", "qa,dev,ops", "audit", "billing,ops")
    listed = {clusters.assign(f"roles granted roles={roles} by portal").key for roles in lists}
    into_key = dict(clusters.take_merged())
    assert len({into_key.get(key, key) for key in listed}) == 1
    apart = TemplateClusters(merge_after=5)
    assert len({apart.assign(f"login ok user={user} from portal").key for user in ("root", "guest")}) == 2


def test_the_fuzz_generator_is_deterministic_and_its_seeds_differ() -> None:
    first = fuzz_formats.generate("iso", 3, lines=50)
    assert first == fuzz_formats.generate("iso", 3, lines=50)
    assert first.lines != fuzz_formats.generate("iso", 4, lines=50).lines
    assert len(first.truth) == len(first.lines) == len(first.messages) == 50
    assert set(fuzz_formats.TUNING_SEEDS).isdisjoint(fuzz_formats.REPORT_SEEDS)


def test_a_two_label_host_with_a_country_code_is_masked_but_not_a_file_name() -> None:
    assert mask("resolved example.de and cdn.example.ru") == "resolved <host> and <host>"
    assert mask("loaded setup.py, run.sh and notes.md") == "loaded setup.py, run.sh and notes.md"


def test_a_list_of_numbers_of_any_length_is_one_value(tmp_path: Path) -> None:
    rng = random.Random(9)
    lines = [
        f"2026-12-03 10:00:{i % 60:02d} INFO batch ids="
        + str([rng.randrange(999) for _ in range(rng.randint(1, 6))])
        + " committed"
        for i in range(40)
    ]
    assert len(set(_groups(tmp_path, lines))) == 1


def test_names_with_and_without_digits_and_lists_of_words_are_one_variable() -> None:
    clusters = TemplateClusters()
    names = ("alice", "bob12", "carol", "dave7")
    keys = {clusters.assign(f"session opened for {name} from the web portal").key for name in names}
    assert len(keys) == 1
    roles = ("admin", "admin,dev", "ops,dev,qa")
    assert len({clusters.assign(f"granted roles {r} to the new account today").key for r in roles}) == 1


def test_a_word_that_held_over_many_lines_is_a_constant_so_its_twin_is_another_event() -> None:
    clusters = TemplateClusters(settled_after=20)
    started = {
        clusters.assign(f"replica {n} of the shard was started by the balancer").key for n in range(25)
    }
    stopped = {clusters.assign(f"replica {n} of the shard was stopped by the balancer").key for n in range(5)}
    assert len(started) == len(stopped) == 1
    assert started != stopped
    early = TemplateClusters(settled_after=20)  # a word that varies from the start is a variable
    users = ("alice", "bob", "carol", "dave")
    assert len({early.assign(f"session of {user} was opened by the portal").key for user in users}) == 1


def test_a_host_and_a_name_with_a_colon_after_the_stamp_are_header(tmp_path: Path) -> None:
    rng = random.Random(10)
    hosts = ("alpha", "bravo", "charlie")  # names without digits: no shape of their own
    events: tuple[tuple[str, Callable[[], str]], ...] = (
        ("Mailer:", lambda: f"sent {rng.randrange(99)} messages to the relay"),
        ("Indexer:", lambda: "index rebuilt from the journal"),
        ("Indexer:", lambda: f"segment {rng.randrange(999)} merged into the main index"),
    )
    lines = []
    for i in range(90):
        name, message = rng.choice(events)
        lines.append(f"03/12/2026 10:{i // 60:02d}:{i % 60:02d} {rng.choice(hosts)} {name} {message()}")
    model = learn(head_lines(_write(tmp_path, lines)))
    assert model.cut("03/12/2026 11:00:00 delta Mailer: sent 3 messages to the relay") == (
        "Mailer: sent 3 messages to the relay"  # what logged it stays: it tells events apart
    )
    assert len(set(_groups(tmp_path, lines))) == 3


def test_a_column_of_node_names_of_several_shapes_is_header(tmp_path: Path) -> None:
    rng = random.Random(11)

    def node() -> str:
        return rng.choice(
            (f"node-{rng.randrange(999)}", f"R{rng.randrange(80)}-M{rng.randrange(2)}-N{rng.randrange(16)}")
        )

    events = (
        ("KERNEL", "I", "cache flushed to disk"),
        ("APP", "W", "ciod: lost contact with the service node"),
    )
    lines = []
    for i in range(90):
        component, level, message = rng.choice(events)
        lines.append(f"{1_700_000_000 + i} 2026.12.03 {node()} {component} {level} {message}")
    model = learn(head_lines(_write(tmp_path, lines)))
    assert model.split("1700000500 2026.12.03 R7-M1-N2 KERNEL I cache flushed to disk") == (
        "cache flushed to disk",
        "INFO",
    )
    assert len(set(_groups(tmp_path, lines))) == 2
