"""`/metrics` in the Prometheus text format (the official prometheus_client library).

One custom collector reads everything at scrape time: the counts from the state database (one read
transaction, bot/store/stats.py), the per-source numbers from the running pipeline and the heartbeat. Nothing
is counted on the hot path, so an unscraped healbot spends no CPU on metrics. Labels are bounded: service,
source (both from the config), kind, state, verdict, outcome; never an incident, fingerprint or proposal.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import platform
import threading
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from bot.errors import HealbotError, SourceError, StoreError
from bot.heartbeat import SourceScan
from bot.interfaces import Clock, LogSource
from bot.observability.view import SourceView
from bot.sources.file import FileCursor
from bot.store import Store, StoreCounts

log = logging.getLogger("healbot.metrics")


class Observed(Protocol):
    """The running daemon as the collector sees it (bot/daemon.py's Daemon)."""

    @property
    def store(self) -> Store: ...

    @property
    def clock(self) -> Clock: ...

    def source_views(self) -> Sequence[SourceView]: ...

    def records_read(self) -> Mapping[str, int]: ...

    def scans(self) -> Sequence[SourceScan]: ...


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def healbot_version() -> str:
    try:
        return metadata.version("healbot")
    except metadata.PackageNotFoundError:
        return "unknown"


def bytes_behind(source: LogSource, cursor: str | None) -> int | None:
    """How many bytes of a file source are not read yet; None for sources that are not files."""
    path = getattr(source, "path", None)
    if not isinstance(path, Path):
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    if cursor is None:
        return 0  # a first read starts at the end
    try:
        at = FileCursor.load(cursor)
    except SourceError:
        return None
    if stat.st_ino != at.inode:
        return stat.st_size  # rotated: the new file is read from its start
    return max(0, stat.st_size - at.offset)


class _Totals:
    """The counters of the append-only tables, read incrementally (see bot/store/stats.py)."""

    def __init__(self) -> None:
        self.incidents_after = 0
        self.diagnoses_after = 0
        self.opened: dict[tuple[str, str], int] = {}
        self.diagnoses: dict[tuple[str, str], list[float]] = {}  # → [count, seconds, cost]

    def catch_up(self, store: Store) -> None:
        while True:
            last, rows = store.incidents_opened_since(self.incidents_after)
            for service, kind, n in rows:
                self.opened[(service, kind)] = self.opened.get((service, kind), 0) + n
            if last == self.incidents_after:
                break
            self.incidents_after = last
        while True:
            last, totals = store.diagnoses_since(self.diagnoses_after)
            for d in totals:
                sums = self.diagnoses.setdefault((d.service, d.outcome), [0.0, 0.0, 0.0])
                sums[0] += d.count
                sums[1] += d.seconds
                sums[2] += d.cost_usd
            if last == self.diagnoses_after:
                break
            self.diagnoses_after = last


class HealbotCollector(Collector):
    def __init__(self, observed: Observed) -> None:
        self._observed = observed
        self._build = (healbot_version(), platform.python_version())
        self._totals = _Totals()
        self._lock = threading.Lock()  # prometheus_client may answer two scrapes at once

    def collect(self) -> Iterator[Metric]:
        observed = self._observed
        yield self._build_info()
        try:
            with self._lock:
                self._totals.catch_up(observed.store)
                counts = observed.store.store_counts()
                totals = _snapshot(self._totals)
        except (StoreError, HealbotError) as exc:
            log.warning("metrics: the state database was not read: %s", exc)
            counts = None
        up = GaugeMetricFamily("healbot_store_up", "1 when the state database answered this scrape")
        up.add_metric([], 0 if counts is None else 1)
        yield up
        if counts is not None:
            yield from _totals_metrics(*totals)
            yield from _store_metrics(counts, observed.clock.now())
        yield from self._source_metrics()

    def _build_info(self) -> Metric:
        info = GaugeMetricFamily(
            "healbot_build_info", "healbot's version and Python's, always 1", labels=["version", "python"]
        )
        info.add_metric(list(self._build), 1)
        return info

    def _source_metrics(self) -> Iterator[Metric]:
        observed = self._observed
        labels = ["service", "source"]
        records = CounterMetricFamily(
            "healbot_source_records_read", "Log records read per source since healbot started", labels=labels
        )
        behind = GaugeMetricFamily(
            "healbot_source_behind_bytes", "Bytes of a log file not read yet", labels=labels
        )
        read = observed.records_read()
        for view in observed.source_views():
            sid = view.source.source_id
            records.add_metric([view.service, sid], read.get(sid, 0))
            cursor = view.read_cursor if view.read_cursor is not None else observed.store.get_cursor(sid)
            lag = bytes_behind(view.source, cursor)
            if lag is not None:
                behind.add_metric([view.service, sid], lag)
        last = GaugeMetricFamily(
            "healbot_source_last_scan_timestamp_seconds",
            "Unix time of the last poll that read the source without an error",
            labels=labels,
        )
        failing = GaugeMetricFamily(
            "healbot_source_failing", "1 when the last read of the source failed", labels=labels
        )
        for scan in observed.scans():
            if scan.last_ok is not None:
                last.add_metric([scan.service, scan.source_id], scan.last_ok)
            failing.add_metric([scan.service, scan.source_id], 0 if scan.problem is None else 1)
        yield from (records, behind, last, failing)


Opened = dict[tuple[str, str], int]
Diagnosed = dict[tuple[str, str], tuple[float, float, float]]


def _snapshot(totals: _Totals) -> tuple[Opened, Diagnosed]:
    return dict(totals.opened), {key: (v[0], v[1], v[2]) for key, v in totals.diagnoses.items()}


def _totals_metrics(opened_totals: Opened, diagnosed: Diagnosed) -> Iterator[Metric]:
    opened = CounterMetricFamily(
        "healbot_incidents_opened", "Incidents opened (kind: log or alert)", labels=["service", "kind"]
    )
    for (service, kind), n in sorted(opened_totals.items()):
        opened.add_metric([service, kind], n)
    outcome = ["service", "outcome"]
    diagnoses = CounterMetricFamily(
        "healbot_diagnoses", "Diagnoses run (outcome: ok or failed)", labels=outcome
    )
    seconds = CounterMetricFamily(
        "healbot_diagnosis_seconds", "Wall-clock seconds spent diagnosing", labels=outcome
    )
    cost = CounterMetricFamily(
        "healbot_diagnosis_cost_usd", "What diagnoses cost, as the runner reported it", labels=outcome
    )
    for (service, result), (count, spent, usd) in sorted(diagnosed.items()):
        diagnoses.add_metric([service, result], count)
        seconds.add_metric([service, result], spent)
        cost.add_metric([service, result], usd)
    yield from (opened, diagnoses, seconds, cost)


def _store_metrics(counts: StoreCounts, now: float) -> Iterator[Metric]:
    by_kind = ["service", "kind"]
    open_ = GaugeMetricFamily("healbot_incidents_open", "Incidents open now", labels=by_kind)
    for service, kind, n in counts.incidents_open:
        open_.add_metric([service, kind], n)
    yield open_

    proposals = GaugeMetricFamily("healbot_proposals", "Proposals by state", labels=["state"])
    for state, n in counts.proposals:
        proposals.add_metric([state], n)
    applies = CounterMetricFamily("healbot_applies", "Approved fixes applied", labels=by_kind)
    for service, kind, n in counts.applies:
        applies.add_metric([service, kind], n)
    verdicts = CounterMetricFamily(
        "healbot_verdicts", "Health verdicts after a change", labels=["service", "verdict"]
    )
    for service, verdict, n in counts.verdicts:
        verdicts.add_metric([service, verdict], n)
    reverts = CounterMetricFamily(
        "healbot_reverts", "Changes reverted (by healbot or an operator)", labels=["service"]
    )
    for service, n in counts.reverts:
        reverts.add_metric([service], n)
    trips = CounterMetricFamily(
        "healbot_breaker_trips", "Incidents a tripped circuit breaker escalated", labels=["service"]
    )
    for service, n in counts.breaker_trips:
        trips.add_metric([service], n)
    yield from (proposals, applies, verdicts, reverts, trips)

    waiting = GaugeMetricFamily("healbot_approvals_waiting", "Proposals waiting for a decision")
    waiting.add_metric([], counts.approvals_waiting)
    oldest = GaugeMetricFamily(
        "healbot_approval_oldest_wait_seconds", "How long the oldest waiting proposal has waited (0: none)"
    )
    created = counts.oldest_approval_created_at
    oldest.add_metric([], 0.0 if created is None else max(0.0, now - created))
    outbox = GaugeMetricFamily("healbot_outbox_messages", "Chat messages queued and not sent yet")
    outbox.add_metric([], counts.outbox_pending)
    yield from (waiting, oldest, outbox)


def build_registry(observed: Observed, *, process: bool = True) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HealbotCollector(observed))
    if process:
        ProcessCollector(registry=registry)  # process_resident_memory_bytes, process_cpu_seconds_total, …
    return registry


class MetricsServer:
    """prometheus_client's HTTP server (a thread) serving one registry; `stop` ends it and its thread."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        try:
            self._server, self._thread = start_http_server(self.port, addr=self.host, registry=self.registry)
        except OSError as exc:
            raise HealbotError(f"[metrics] cannot listen on {self.host}:{self.port}: {exc}") from exc
        self.port = int(self._server.server_address[1])
        log.info("metrics served on http://%s:%d/metrics", self.host, self.port)
        if not is_loopback(self.host):
            log.warning(
                "metrics are served on %s without authentication: let only your Prometheus reach it",
                self.host,
            )

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
