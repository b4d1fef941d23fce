"""Template clusters kept in the store: a plain-text error keeps its incident key across a daemon restart."""

from __future__ import annotations

import asyncio
import io
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from bot.clusters import WILDCARD, Cluster, SavedCluster, TemplateClusters
from bot.config import load_config
from bot.console import ConsoleChannel
from bot.daemon import Daemon
from bot.grouping import SAVE_RETRY_S, Grouper
from bot.models import LogRecord
from bot.runner.claude_cli import ClaudeCliRunner
from bot.store import MIGRATIONS, Observation, Store
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
        self, service: str, is_error: bool, clusters: Sequence[SavedCluster], *, at: float
    ) -> None:
        self.store.save_clusters(service, is_error, clusters, at=at)
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
    clusters.assign("session closed for user alice")
    assert not clusters.has_changes  # the same line again: nothing to save
    clusters.assign("session closed for user bob")
    assert [c.template for c in clusters.take_changed()] == ["session closed for user <*>"]
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
