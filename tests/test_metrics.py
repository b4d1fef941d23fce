"""`/metrics` (issue 16): the collector reads every count from the state at scrape time, names follow the
Prometheus guide (`promtool check metrics`, the real one), labels stay bounded; and the real Prometheus
scrapes a running `healbot run` and answers a PromQL query with the incident the test caused."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bot.config import load_config
from bot.errors import ConfigError
from bot.heartbeat import SourceScan
from bot.interfaces import Clock
from bot.observability.metrics import build_registry, bytes_behind
from bot.observability.view import SourceView
from bot.pipeline import BREAKER_NOTICE_PREFIX
from bot.reload import plan_reload
from bot.sources.file import FileSource
from bot.store import Store
from bot.store import stats as store_stats
from tests.fakes.daemon_proc import StartDaemon, healbot_run_fixture
from tests.fakes.prometheus import Prometheus, promtool, running
from tests.fakes.world import ManualClock, scratch_service
from tests.helpers import free_port, wait_until

__all__ = ["healbot_run_fixture"]  # the fixture

NOW = 1_800_000_000.0


class Observed:
    def __init__(
        self, store: Store, sources: Sequence[SourceView] = (), read: Mapping[str, int] | None = None
    ):
        self._store = store
        self._clock = ManualClock()
        self._clock.t = NOW
        self._sources = sources
        self._read = dict(read or {})
        self.scanned: list[SourceScan] = []

    @property
    def store(self) -> Store:
        return self._store

    @property
    def clock(self) -> Clock:
        return self._clock

    def source_views(self) -> Sequence[SourceView]:
        return self._sources

    def records_read(self) -> Mapping[str, int]:
        return self._read

    def scans(self) -> Sequence[SourceScan]:
        return self.scanned


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def fill(db: Path) -> None:
    """A state database as months of work leave it: incidents of two kinds, diagnoses, proposals, changes,
    verdicts, a revert, a breaker escalation, a waiting approval, an unsent message."""
    conn = sqlite3.connect(db)
    incidents = [
        (1, "web", "aaaa", "open", 1),
        (2, "web", "bbbb", "resolved", 0),
        (3, "web", "alert-0123456789abcdef", "awaiting_approval", 1),
        (4, "api", "cccc", "reverted", 0),
    ]
    for iid, service, fp, state, is_open in incidents:
        conn.execute(
            "INSERT INTO incidents (id, service, fingerprint, title, state, is_open, first_seen, last_seen,"
            " count, samples) VALUES (?, ?, ?, 't', ?, ?, 0, 0, 1, '[]')",
            (iid, service, fp, state, is_open),
        )
    for iid, seconds, cost, error in [(1, 2.5, 0.1, None), (2, 1.5, 0.2, None), (3, 4.0, None, "boom")]:
        conn.execute(
            "INSERT INTO diagnoses (incident_id, runner, summary, duration_s, cost_usd, error, created_at)"
            " VALUES (?, 'cli', 's', ?, ?, ?, 0)",
            (iid, seconds, cost, error),
        )
    for pid, iid, status, created in [
        (1, 2, "approved", 0),
        (2, 3, "pending", NOW - 90),
        (3, 4, "approved", 0),
    ]:
        conn.execute(
            "INSERT INTO proposals (id, incident_id, token, base_commit, candidates, summary, created_at,"
            " expires_at, status) VALUES (?, ?, ?, 'abc', '[]', 's', ?, ?, ?)",
            (pid, iid, f"tok{pid}", created, NOW + 3600, status),
        )
    for cid, iid, pid, service, status in [(1, 2, 1, "web", "kept"), (2, 4, 3, "api", "reverted")]:
        conn.execute(
            "INSERT INTO changes (id, incident_id, proposal_id, rank, service, kind, digest, status,"
            " approved_by, created_at, updated_at) VALUES (?, ?, ?, 1, ?, 'patch', 'd', ?, 'alice', 0, 0)",
            (cid, iid, pid, service, status),
        )
    for cid, verdict in [(1, "better"), (2, "worse")]:
        conn.execute(
            "INSERT INTO outcomes (change_id, before, after, verdict, reasons, created_at)"
            " VALUES (?, '{}', '{}', ?, '[]', 0)",
            (cid, verdict),
        )
    conn.execute("INSERT INTO settings (key, value) VALUES (?, 'tripped')", (f"{BREAKER_NOTICE_PREFIX}4",))
    conn.execute("INSERT INTO settings (key, value) VALUES ('breaker_noticf', 'not a trip')")
    conn.execute(
        "INSERT INTO outbox (chat_id, key, kind, payload, created_at) VALUES ('1', 'k', 'note', '{}', 0)"
    )
    conn.commit()
    conn.close()


def test_metrics_count_what_the_store_holds_and_pass_promtool(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "healbot.db")
    fill(tmp_path / "healbot.db")
    log = tmp_path / "web.log"
    log.write_text("one\ntwo\n")
    source = FileSource("web", log)
    behind_cursor = source.start_cursor()  # at 0: the whole file is still to read
    observed = Observed(store, [SourceView("web", source, behind_cursor)], {source.source_id: 7})
    observed.scanned = [SourceScan(source.source_id, "web", NOW - 5, None)]
    text = generate_latest(build_registry(observed)).decode()
    got = samples(text)

    def value(name: str, **labels: str) -> float:
        return got[(name, frozenset(labels.items()))]

    assert value("healbot_incidents_opened_total", service="web", kind="log") == 2
    assert value("healbot_incidents_opened_total", service="web", kind="alert") == 1
    assert value("healbot_incidents_opened_total", service="api", kind="log") == 1
    assert value("healbot_incidents_open", service="web", kind="log") == 1
    assert value("healbot_incidents_open", service="web", kind="alert") == 1
    assert value("healbot_diagnoses_total", service="web", outcome="ok") == 2
    assert value("healbot_diagnoses_total", service="web", outcome="failed") == 1
    assert value("healbot_diagnosis_seconds_total", service="web", outcome="ok") == 4.0
    assert value("healbot_diagnosis_cost_usd_total", service="web", outcome="ok") == pytest.approx(0.3)
    assert value("healbot_proposals", state="approved") == 2
    assert value("healbot_proposals", state="pending") == 1
    assert value("healbot_applies_total", service="web", kind="patch") == 1
    assert value("healbot_verdicts_total", service="api", verdict="worse") == 1
    assert value("healbot_reverts_total", service="api") == 1
    assert value("healbot_breaker_trips_total", service="api") == 1
    assert ("healbot_breaker_trips_total", frozenset({("service", "web")})) not in got
    assert value("healbot_approvals_waiting") == 1
    assert value("healbot_approval_oldest_wait_seconds") == 90
    assert value("healbot_outbox_messages") == 1
    assert value("healbot_source_records_read_total", service="web", source=source.source_id) == 7
    assert value("healbot_source_behind_bytes", service="web", source=source.source_id) == len("one\ntwo\n")
    assert (
        value("healbot_source_last_scan_timestamp_seconds", service="web", source=source.source_id) == NOW - 5
    )
    assert value("healbot_store_up") == 1
    assert any(name == "healbot_build_info" for name, _ in got)
    assert "process_resident_memory_bytes" in text
    # bounded labels only: no fingerprint, incident or proposal ever becomes a label value
    label_values = {v for _, labels in got for _, v in labels}
    assert not label_values & {"aaaa", "alert-0123456789abcdef", "tok2", "1", "3"}
    checked = promtool("check", "metrics", stdin=text)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == "", checked.stdout + checked.stderr
    store.close()


def test_breaker_prefix_is_the_pipelines() -> None:
    assert store_stats.BREAKER_NOTICE_PREFIX == BREAKER_NOTICE_PREFIX


def test_bytes_behind_a_file_and_after_rotation(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("a\n")
    source = FileSource("web", log)
    at_end = source.read(None).cursor
    assert bytes_behind(source, at_end) == 0
    log.write_text("a\nbb\n")
    assert bytes_behind(source, at_end) == 3
    log.rename(tmp_path / "app.log.1")
    log.write_text("new file\n")
    assert bytes_behind(source, at_end) == len("new file\n")  # rotated: the new file is all behind
    assert bytes_behind(source, None) == 0
    assert bytes_behind(source, "not a cursor") is None


def test_metrics_config_is_off_by_default_and_validated(tmp_path: Path) -> None:
    service = scratch_service(tmp_path)
    config = load_config(service.write_config())
    assert not config.metrics.enabled and not config.alerts.enabled
    assert (config.metrics.host, config.metrics.port) == ("127.0.0.1", 9464)
    with pytest.raises(ConfigError, match=r"metrics\.port.*at most 65535"):
        load_config(service.write_config(tables={"metrics": {"enabled": True, "port": 70000}}))
    with pytest.raises(ConfigError, match=r"metrics\.host"):
        load_config(service.write_config(tables={"metrics": {"host": "a b"}}))


@pytest.mark.slow
def test_prometheus_scrapes_healbot_run_and_promql_returns_the_incident(
    tmp_path: Path, healbot_run: StartDaemon
) -> None:
    service = scratch_service(tmp_path)
    port = free_port()
    config = service.write_config(
        healbot={"poll_interval_s": 0.1},
        claude={"binary": "/nonexistent/claude"},  # diagnosis fails fast: this test counts incidents
        tables={"metrics": {"enabled": True, "port": port}},
    )
    daemon = healbot_run(config)
    try:
        daemon.wait_for(f"metrics served on http://127.0.0.1:{port}/metrics", 20)
        with running(Prometheus(tmp_path / "prometheus", [f"127.0.0.1:{port}"])) as prometheus:
            assert isinstance(prometheus, Prometheus)
            wait_until(prometheus.targets_up, 30, interval=0.2, what="Prometheus scraping healbot")
            service.append("2026-12-03 10:00:00 ERROR payment failed: card declined\n")
            query = 'healbot_incidents_opened_total{service="svc",kind="log"}'

            def counted() -> bool:
                result = prometheus.query(query)
                return bool(result) and float(result[0]["value"][1]) == 1.0

            wait_until(counted, 30, interval=0.2, what=f"PromQL {query} == 1")
            [read] = prometheus.query('healbot_source_records_read_total{service="svc"}')
            assert float(read["value"][1]) >= 1
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
                live = answer.read().decode()
        checked = promtool("check", "metrics", stdin=live)
        assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout + checked.stderr
    finally:
        assert daemon.stop() == 0, daemon.output()


def test_reload_keeps_metrics_and_alerts_until_a_restart(tmp_path: Path) -> None:
    """Regression: a SIGHUP that changed [metrics] or [alerts] was reported as applied while the servers
    kept listening as started."""
    service = scratch_service(tmp_path)
    running = load_config(service.write_config())
    loaded = load_config(
        service.write_config(
            tables={"metrics": {"enabled": True, "port": 9999}, "alerts": {"service_label": "job"}}
        )
    )
    plan = plan_reload(running, loaded)
    assert set(plan.needs_restart) == {"metrics", "alerts"}
    assert plan.config.metrics == running.metrics and plan.config.alerts == running.alerts


def test_a_healbot_without_metrics_does_not_load_prometheus_client() -> None:
    code = "import sys, bot.cli, bot.daemon; print('prometheus_client' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"


def test_counters_of_append_only_tables_are_read_incrementally_in_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A months-old database: the first scrape reads incidents and diagnoses in batches (the store's lock
    free between them), later scrapes only the rows added since."""
    monkeypatch.setattr(store_stats, "BATCH_ROWS", 2)
    store = Store.open(tmp_path / "healbot.db")
    fill(tmp_path / "healbot.db")
    registry = build_registry(Observed(store), process=False)

    def opened(kind: str) -> float:
        return samples(generate_latest(registry).decode())[
            ("healbot_incidents_opened_total", frozenset({("service", "web"), ("kind", kind)}))
        ]

    assert opened("log") == 2 and opened("alert") == 1
    conn = sqlite3.connect(tmp_path / "healbot.db")
    conn.execute(
        "INSERT INTO incidents (service, fingerprint, title, state, is_open, first_seen, last_seen, count,"
        " samples) VALUES ('web', 'dddd', 't', 'open', 1, 0, 0, 1, '[]')"
    )
    conn.execute(
        "INSERT INTO diagnoses (incident_id, runner, summary, duration_s, created_at) VALUES (5, 'cli', 's', 1, 0)"
    )
    conn.commit()
    conn.close()
    assert opened("log") == 3 and opened("alert") == 1
    got = samples(generate_latest(registry).decode())
    assert got[("healbot_diagnoses_total", frozenset({("service", "web"), ("outcome", "ok")}))] == 3
    assert got[("healbot_diagnosis_seconds_total", frozenset({("service", "web"), ("outcome", "ok")}))] == 5.0
    store.close()
