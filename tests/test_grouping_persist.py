"""Template clusters kept in the store: a plain-text error keeps its incident key across a daemon restart."""

from __future__ import annotations

import asyncio
import io
import sqlite3
import time
from collections.abc import Collection, Sequence
from pathlib import Path

import pytest

from bot.clusters import TOUCH_INTERVAL_S, WILDCARD, Cluster, SavedCluster, TemplateClusters
from bot.config import load_config
from bot.console import ConsoleChannel
from bot.daemon import Daemon
from bot.grouping import CHURN_SAVE_S, SAVE_RETRY_S, Grouper
from bot.models import LogRecord
from bot.runner.claude_cli import ClaudeCliRunner
from bot.store import CLUSTER_KEEP_DAYS, MIGRATIONS, Observation, Store
from tests.fakes.world import scratch_service

ALICE = "2026-11-26 06:00:00 ERROR sshd: session closed for user alice"
BOB = "2026-11-26 06:00:01 ERROR sshd: session closed for user bob"
CAROL = "2026-11-26 06:00:02 ERROR sshd: session closed for user carol"


def record(text: str, service: str = "svc") -> LogRecord:
    return LogRecord(service=service, source="test", text=text)


class CountingStore:
    """The real store, with its cluster writes counted (a ClusterStore)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.writes = 0
        self.clusters_written = 0

    def load_clusters(self, service: str, is_error: bool) -> list[SavedCluster]:
        return self.store.load_clusters(service, is_error)

    def save_clusters(
        self,
        service: str,
        is_error: bool,
        clusters: Sequence[SavedCluster],
        *,
        at: float,
        forget: Collection[str] = (),
    ) -> None:
        self.store.save_clusters(service, is_error, clusters, at=at, forget=forget)
        self.writes += 1
        self.clusters_written += len(clusters)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "healbot.db"


def test_a_restart_keeps_the_key_of_a_plain_error_cluster(db: Path) -> None:
    store = Store.open(db)
    alice = Grouper(persistence=store).fingerprint(record(ALICE))
    store.close()

    store = Store.open(db)  # the daemon restarted: a new Grouper, the same database
    bob = Grouper(persistence=store).fingerprint(record(BOB))
    store.close()

    assert bob.key == alice.key
    assert bob.template == f"sshd: session closed for user {WILDCARD}"
    assert Grouper().fingerprint(record(BOB)).key != alice.key  # what the restart did before


def test_a_generalised_cluster_comes_back_whole_and_stays_one_key(db: Path) -> None:
    store = Store.open(db)
    before = Grouper(persistence=store)
    first = before.fingerprint(record(ALICE))
    assert before.fingerprint(record(BOB)).key == first.key
    store.close()

    store = Store.open(db)
    after = Grouper(persistence=store)
    carol = after.fingerprint(record(CAROL))
    [saved] = store.load_clusters("svc", True)
    store.close()
    assert carol.key == first.key
    assert saved.template == f"sshd: session closed for user {WILDCARD}" and saved.learned == (5,)


def test_a_saved_cluster_round_trips_with_its_learned_positions() -> None:
    clusters = TemplateClusters()
    clusters.assign("worker 7 could not reach the ledger alice now")
    cluster = clusters.assign("worker 7 could not reach the ledger bob now")
    assert Cluster.from_saved(cluster.saved()) == cluster
    assert cluster.learned == {7}


def test_only_created_and_generalised_clusters_are_reported_as_changed() -> None:
    clusters = TemplateClusters(track_changes=True)
    clusters.assign("session closed for user alice")
    assert [c.key for c in clusters.take_changed()] == ["session closed for user alice"]
    clusters.assign("session closed for user bob")
    assert [c.template for c in clusters.take_changed()] == ["session closed for user <*>"]
    clusters.assign("session closed for user bob")
    assert not clusters.has_changes  # the same line again: nothing to save
    clusters.assign("session closed for user carol")
    assert not clusters.has_changes  # already a wildcard there
    untracked = TemplateClusters()
    untracked.assign("session closed for user alice")
    assert not untracked.has_changes


def test_a_flood_of_three_templates_writes_a_handful_of_times(db: Path) -> None:
    store = Store.open(db)
    counting = CountingStore(store)
    grouper = Grouper(persistence=counting)
    templates = (
        "2026-11-26 06:00:00 ERROR sshd: session closed for user {word}",
        "2026-11-26 06:00:00 ERROR billing: cannot reach ledger node {word} in time",
        "2026-11-26 06:00:00 CRITICAL queue: worker {word} dropped the order",
    )
    words = [f"w{chr(97 + i % 26)}{chr(97 + i // 26 % 26)}x" for i in range(500)]
    keys = set()
    started = time.perf_counter()
    for n in range(100_000):
        fp = grouper.fingerprint(record(templates[n % 3].format(word=words[n % len(words)])))
        keys.add(fp.key)
    elapsed = time.perf_counter() - started
    saved = store.load_clusters("svc", True)
    store.close()
    assert len(keys) == 3
    assert counting.writes <= 6, counting.writes  # each cluster: created once, generalised once
    assert len(saved) == 3 and all(WILDCARD in c.template for c in saved)
    print(f"100k lines, 3 templates: {counting.writes} writes, {elapsed:.2f} s")


def test_the_pipeline_keeps_one_incident_across_a_daemon_restart(tmp_path: Path) -> None:
    service = scratch_service(tmp_path)
    log = service.log
    config = load_config(service.write_config())

    async def run_daemon(line: str) -> None:
        runner = ClaudeCliRunner(config.claude, config_dir=tmp_path / "claude")
        daemon = Daemon(config, ConsoleChannel(out=io.StringIO(), interactive=False), runner=runner)
        daemon.pipeline.auto_diagnose = False
        try:
            await daemon.pipeline.poll_once()  # first run: the cursor at the end (kept over the restart)
            with log.open("a") as out:
                out.write(line + "\n")
            await daemon.pipeline.poll_once()
            await daemon.pipeline.poll_once()  # a quiet poll flushes the pending record
        finally:
            daemon.store.close()

    asyncio.run(run_daemon(ALICE))
    asyncio.run(run_daemon(BOB))

    store = Store.open(config.db_path)
    incidents = store.incidents()
    store.close()
    assert [(i.count, i.title) for i in incidents] == [(2, "sshd: session closed for user alice")]


def test_a_version_4_database_migrates_and_keeps_its_data(db: Path) -> None:
    db.parent.mkdir(parents=True)
    conn = sqlite3.connect(db, isolation_level=None)
    for script in MIGRATIONS[:4]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version = 4")
    conn.execute("INSERT INTO cursors (source_id, cursor, updated_at) VALUES ('file:a', 'c4', 1.0)")
    conn.execute(
        "INSERT INTO incidents (service, fingerprint, title, state, first_seen, last_seen, count, samples)"
        " VALUES ('svc', 'k1', 'boom', 'open', 1.0, 2.0, 7, '[\"s\"]')"
    )
    conn.close()

    store = Store.open(db)
    assert store.schema_version() == len(MIGRATIONS)
    assert store.get_cursor("file:a") == "c4"
    [incident] = store.incidents()
    assert (incident.fingerprint, incident.count, incident.samples) == ("k1", 7, ("s",))
    assert store.load_clusters("svc", True) == []
    fp = Grouper(persistence=store).fingerprint(record(ALICE))
    store.ingest("file:a", "c5", [Observation(fp, "s", 3.0)], max_samples=3, at=3.0)
    assert [c.key for c in store.load_clusters("svc", True)] == ["sshd: session closed for user alice"]
    store.close()


def test_malformed_cluster_rows_are_skipped_at_start_up(db: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = Store.open(db)
    good = SavedCluster("sshd: session closed for user alice", "sshd: session closed for user <*>", 2, (5,))
    store.save_clusters("svc", True, [good], at=1.0)
    conn = sqlite3.connect(db, isolation_level=None)
    rows = [
        ("k-bad-json", "t", "not json", 1),
        ("k-bad-size", "t", "[]", "many"),
        ("k-learned-not-wild", "k learned not wild", "[1]", 1),
        ("other words entirely", "sshd: session closed for user <*>", "[5]", 1),
        ("k-learned-strings", "k <*>", '["1"]', 1),
        ("k-empty", "", "[]", 1),
    ]
    for key, template, learned, size in rows:
        conn.execute(
            "INSERT INTO template_clusters (service, is_error, key, template, learned, size, updated_at)"
            " VALUES ('svc', 1, ?, ?, ?, ?, 1.0)",
            (key, template, learned, size),
        )
    conn.close()

    grouper = Grouper(persistence=store)
    bob = grouper.fingerprint(record(BOB))
    store.close()
    assert bob.key == Grouper().fingerprint(record(ALICE)).key  # the good row still works
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == len(rows), skipped


def test_restored_clusters_stay_within_max_clusters() -> None:
    saved = [SavedCluster(f"{w} failed now", f"{w} failed now", 1, ()) for w in ("a", "b", "c", "d", "e")]
    clusters = TemplateClusters(max_clusters=3)
    assert clusters.restore(saved + saved[:1]) == 3  # two over the bound, one duplicate
    assert len(clusters) == 3


def test_a_locked_store_never_breaks_grouping_and_saves_later(db: Path) -> None:
    store = Store.open(db, busy_timeout_s=0.05)
    clock = [1000.0]
    grouper = Grouper(persistence=store, now=lambda: clock[0])
    grouper.fingerprint(record("2026-11-26 06:00:00 ERROR warmup happened"))  # loads the (empty) set
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    alice = grouper.fingerprint(record(ALICE))
    assert alice.template == "sshd: session closed for user alice"
    holder.execute("ROLLBACK")
    holder.close()
    grouper.fingerprint(record("2026-11-26 06:00:00 ERROR second thing happened"))
    assert len(store.load_clusters("svc", True)) == 1  # inside the retry pause: not yet written
    clock[0] += SAVE_RETRY_S
    grouper.fingerprint(record("2026-11-26 06:00:00 ERROR third thing happened"))
    assert {c.key for c in store.load_clusters("svc", True)} == {
        "warmup happened",
        "sshd: session closed for user alice",
        "second thing happened",
        "third thing happened",
    }
    store.close()


# --- bounded and fresh: LRU eviction, last-seen times, pruning at start ----------------------------------

LEDGER = "ledger alpha refused the call"
QUEUE = "queue bravo dropped its items"
CACHE = "cache charlie lost its entries"  # the same five tokens as the two above, another event


def error(message: str) -> LogRecord:
    return record(f"2026-11-26 06:00:00 ERROR {message}")


class Clock:
    def __init__(self, at: float = 1000.0) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


def word(n: int) -> str:
    """A plain word of its own for each n below 26**4."""
    return "".join(chr(97 + n // 26**i % 26) for i in range(4))


def saved_keys(store: Store) -> set[str]:
    return {c.key for c in store.load_clusters("svc", True)}


def test_a_full_token_count_evicts_the_least_recently_used_and_clusters_the_new_template(db: Path) -> None:
    store = Store.open(db)
    clock = Clock()
    grouper = Grouper(persistence=store, now=clock, max_clusters=2)
    for at, message in ((1000, LEDGER), (1001, QUEUE), (1002, LEDGER)):
        clock.at = at
        grouper.fingerprint(error(message))
    clock.at = 1003
    first = grouper.fingerprint(error(CACHE))  # full: the queue cluster, matched longest ago, goes
    clock.at = 1004
    second = grouper.fingerprint(error("cache delta lost its entries"))
    assert second.key == first.key  # the new template is clustered (before: a key of its own per line)
    assert second.template == f"cache {WILDCARD} lost its entries"
    assert saved_keys(store) == {LEDGER, CACHE}  # the evicted row is deleted with the new one's insert

    clock.at = 1005
    queue = grouper.fingerprint(error(QUEUE))  # back as a new cluster; the ledger is the least recent now
    assert queue.template == QUEUE
    clock.at = 1005 + CHURN_SAVE_S
    assert grouper.save_pending()
    assert saved_keys(store) == {CACHE, QUEUE}
    store.close()

    store = Store.open(db)  # a restart keeps the generalised survivor
    echo = Grouper(persistence=store, now=clock, max_clusters=2).fingerprint(
        error("cache echo lost its entries")
    )
    store.close()
    assert echo.key == first.key


def test_restoring_over_the_bound_keeps_the_most_recently_seen_and_forgets_the_rest() -> None:
    seen = {"a": 5.0, "b": 1.0, "c": 4.0, "d": 2.0, "e": 3.0}
    saved = [SavedCluster(f"{w} failed now", f"{w} failed now", 1, (), at) for w, at in seen.items()]
    clusters = TemplateClusters(max_clusters=3, track_changes=True)
    assert clusters.restore(saved) == 2
    assert clusters.take_forgotten() == {"b failed now", "d failed now"}  # their rows go at the next save
    assert clusters.assign("a failed now", 6.0).key == "a failed now"
    clusters.assign("f went away for now", 7.0)  # another token count: nothing is evicted
    assert clusters.evictions == 0
    assert clusters.assign("x y z", 8.0).key == "x y z"
    assert clusters.evictions == 1
    assert clusters.take_forgotten() == {"e failed now"}  # the least recently seen of those kept
    assert {c.key for c in clusters.take_changed()} == {"f went away for now", "x y z"}  # "a": seen lately


def test_last_seen_is_written_at_most_once_an_hour_or_with_the_next_save(db: Path) -> None:
    store = Store.open(db)
    counting = CountingStore(store)
    clock = Clock(1000.0)
    grouper = Grouper(persistence=counting, now=clock)
    grouper.fingerprint(error(LEDGER))
    assert counting.writes == 1
    for minute in range(1, 60):  # matched every minute for an hour: no write
        clock.at = 1000.0 + 60 * minute
        grouper.fingerprint(error(LEDGER))
    assert counting.writes == 1
    [ledger] = store.load_clusters("svc", True)
    assert ledger.last_seen == 1000.0

    clock.at = 1000.0 + TOUCH_INTERVAL_S
    grouper.fingerprint(error(LEDGER))  # an hour after it was written: written once more
    for second in range(1, 100):
        clock.at = 1000.0 + TOUCH_INTERVAL_S + second
        grouper.fingerprint(error(LEDGER))
    assert counting.writes == 2
    assert [c.last_seen for c in store.load_clusters("svc", True)] == [1000.0 + TOUCH_INTERVAL_S]

    clock.at = 6000.0
    grouper.fingerprint(error(QUEUE))  # a new cluster: saved at once; the next hourly batch is due at 9600
    assert counting.writes == 3
    clock.at = 8300.0  # the ledger's saved time is more than an hour old, the batch is not due yet
    grouper.fingerprint(error(LEDGER))
    assert counting.writes == 3
    clock.at = 8301.0
    grouper.fingerprint(error(CACHE))  # a new cluster is saved at once, the ledger's time with it
    assert counting.writes == 4 and counting.clusters_written == 5
    times = {c.key: c.last_seen for c in store.load_clusters("svc", True)}
    store.close()
    assert times == {LEDGER: 8300.0, QUEUE: 6000.0, CACHE: 8301.0}


def test_a_flood_of_one_off_templates_in_a_full_set_writes_rarely_and_stays_bounded(db: Path) -> None:
    store = Store.open(db)
    counting = CountingStore(store)
    clock = Clock()
    grouper = Grouper(persistence=counting, now=clock, max_clusters=5)
    keys = set()
    for n in range(20_000):  # 20 s of one-off lines, each its own cluster (2 of 5 words agree: 0.4; three
        clock.at = 1000.0 + n / 1000  # positions differ, so no evidence for one or two variables either)
        keys.add(grouper.fingerprint(error(f"lookup {word(n)} failed {word(n)} {word(n)}")).key)
    assert len(keys) == 20_000  # every new template got a place: nothing is refused
    assert counting.writes <= 5 + 20 / CHURN_SAVE_S + 1, counting.writes  # the first five, then a batch
    clock.at += CHURN_SAVE_S
    assert grouper.save_pending()
    saved = store.load_clusters("svc", True)
    store.close()
    # the database holds the live clusters only, not every template ever seen
    assert [c.key for c in saved] == [
        f"lookup {word(n)} failed {word(n)} {word(n)}" for n in range(19_995, 20_000)
    ]


def test_a_cluster_evicted_before_its_failed_save_is_retried_is_never_written(db: Path) -> None:
    store = Store.open(db, busy_timeout_s=0.05)
    clock = Clock()
    grouper = Grouper(persistence=store, now=clock, max_clusters=1)
    grouper.fingerprint(error(LEDGER))
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    grouper.fingerprint(error(QUEUE))  # evicts the ledger; the write fails
    holder.execute("ROLLBACK")
    holder.close()
    grouper.fingerprint(error(CACHE))  # evicts the queue, which was never written
    clock.at += SAVE_RETRY_S
    assert grouper.save_pending()
    assert saved_keys(store) == {CACHE}
    store.close()


def test_prune_deletes_clusters_unseen_for_the_keep_days_and_those_of_removed_services(db: Path) -> None:
    now = 100 * 86400.0
    old = now - CLUSTER_KEEP_DAYS * 86400.0
    store = Store.open(db)
    store.save_clusters("svc", True, [SavedCluster("fresh", "fresh", 1, (), now - 60)], at=now)
    store.save_clusters("svc", True, [SavedCluster("edge", "edge", 1, (), old)], at=now)
    store.save_clusters("svc", False, [SavedCluster("stale", "stale", 1, (), old - 1)], at=now)
    store.save_clusters("gone", True, [SavedCluster("removed", "removed", 1, (), now)], at=now)
    assert store.prune_clusters(["svc", "other"], now=now) == 2
    assert saved_keys(store) == {"fresh", "edge"}
    assert store.load_clusters("svc", False) == [] and store.load_clusters("gone", True) == []
    assert store.prune_clusters([], now=now) == 2  # no services configured: nothing is kept
    store.close()


def test_the_daemon_prunes_template_clusters_at_start(tmp_path: Path) -> None:
    service = scratch_service(tmp_path)
    config = load_config(service.write_config())
    now = time.time()
    store = Store.open(config.db_path)
    store.save_clusters("svc", True, [SavedCluster(ALICE, ALICE, 1, (), now - 3600)], at=now)
    store.save_clusters("svc", True, [SavedCluster(BOB, BOB, 1, (), now - 31 * 86400)], at=now)
    store.save_clusters("removed", True, [SavedCluster(CAROL, CAROL, 1, (), now)], at=now)
    store.close()

    async def start_and_stop() -> None:
        runner = ClaudeCliRunner(config.claude, config_dir=tmp_path / "claude")
        daemon = Daemon(config, ConsoleChannel(out=io.StringIO(), interactive=False), runner=runner)
        try:
            await daemon.start()
            await daemon.stop()
        finally:
            daemon.store.close()

    asyncio.run(start_and_stop())
    store = Store.open(config.db_path)
    assert saved_keys(store) == {ALICE}
    assert store.load_clusters("removed", True) == []
    store.close()


def test_a_daemon_stop_writes_the_clusters_it_held_back(tmp_path: Path) -> None:
    """Under churn (a full set evicting), saves wait up to CHURN_SAVE_S: a stop must write them."""
    service = scratch_service(tmp_path)
    config = load_config(service.write_config())
    clock = Clock()

    async def churn_then_stop() -> None:
        runner = ClaudeCliRunner(config.claude, config_dir=tmp_path / "claude")
        daemon = Daemon(config, ConsoleChannel(out=io.StringIO(), interactive=False), runner=runner)
        try:
            await daemon.start()
            grouper = Grouper(persistence=daemon.store, now=clock, max_clusters=2)
            daemon.pipeline.grouper = grouper
            for n in range(50):  # one-off templates in a set of two: churn, saves held back
                clock.at = 1000.0 + n / 100
                grouper.fingerprint(error(f"lookup failed {word(n)}"))
            await daemon.stop()
        finally:
            daemon.store.close()

    asyncio.run(churn_then_stop())
    store = Store.open(config.db_path)
    live = {f"lookup failed {word(n)}" for n in (48, 49)}
    assert saved_keys(store) == live, "the stop lost the clusters held back during churn"
    store.close()
