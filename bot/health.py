"""Health: error counts per fingerprint, probes (process, HTTP, TCP), snapshots and the before/after verdict.

The pipeline takes a snapshot before a change and another after it (same window length), and `verdict`
compares them. Probes never raise: a failing probe is a field (process_up False, http_status 0, tcp_ok
False) with the reason in `detail`.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import repeat
from urllib.parse import urlsplit

from bot.config import HealthConfig
from bot.interfaces import ServiceManager
from bot.models import HealthSnapshot, ServiceState, Verdict
from bot.store.error_counts import ErrorSeries

NO_HTTP_ANSWER = 0  # http_status when the URL was probed but no HTTP answer came (refused, timeout, …)
_HTTP_BODY_LIMIT = 64 * 1024


# --- error ledger ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Series:
    """Error times of one (service, fingerprint): the newest ones exactly, older ones as bucket counts."""

    recent: deque[float]
    buckets: dict[int, int] = field(default_factory=dict)  # bucket index (at // bucket_s) → count
    last_seen: float = 0.0


class ErrorLedger:
    """How many errors of each fingerprint a service logged in a time window.

    Memory is bounded: per fingerprint at most `max_timestamps` exact times (older ones are folded into
    counters per `bucket_s`, so windows are exact to within one bucket for very frequent errors), at
    most `max_fingerprints` fingerprints per service (the least recently seen goes first), and nothing
    older than `horizon_s` before the newest record. Thread-safe.

    What changed since the last `take_changes` is handed out for the store to keep, and `restore` loads
    it again after a daemon restart, so a verdict counts the errors seen before the restart.
    """

    DEFAULT_BUCKET_S = 10.0

    def __init__(
        self,
        *,
        max_timestamps: int = 512,
        bucket_s: float = DEFAULT_BUCKET_S,
        horizon_s: float = 24 * 3600.0,
        max_fingerprints: int = 1000,
    ) -> None:
        for name, value in (
            ("max_timestamps", max_timestamps),
            ("bucket_s", bucket_s),
            ("horizon_s", horizon_s),
            ("max_fingerprints", max_fingerprints),
        ):
            if value <= 0:
                raise ValueError(f"ErrorLedger {name} must be greater than 0, not {value}")
        self.max_timestamps = max_timestamps
        self.bucket_s = bucket_s
        self.horizon_s = horizon_s
        self.max_fingerprints = max_fingerprints
        self._series: dict[str, OrderedDict[str, _Series]] = {}  # per service, least recently recorded first
        self._newest = float("-inf")
        self._pruned_at = float("-inf")
        self._lock = threading.Lock()
        self._changed: set[tuple[str, str]] = set()  # (service, fingerprint) not yet saved
        self._dropped: set[tuple[str, str]] = set()  # evicted or pruned, not yet deleted from the store

    def record(self, service: str, fingerprint: str, at: float, count: int = 1) -> None:
        """`count` errors of `fingerprint` at `at`: the same as `count` calls with one error each (a batch's
        records share their time, so a flood costs one call per fingerprint and chunk, not per record)."""
        if count < 1:
            raise ValueError(f"ErrorLedger.record count must be at least 1, not {count}")
        with self._lock:
            by_fingerprint = self._series.setdefault(service, OrderedDict())
            series = by_fingerprint.get(fingerprint)
            if series is None:
                if len(by_fingerprint) >= self.max_fingerprints:
                    # O(1): a flood of new kinds must not cost O(n) each
                    evicted, _ = by_fingerprint.popitem(last=False)
                    self._drop((service, evicted))
                series = by_fingerprint[fingerprint] = _Series(deque(maxlen=self.max_timestamps))
                self._dropped.discard((service, fingerprint))
            else:
                by_fingerprint.move_to_end(fingerprint)
            self._changed.add((service, fingerprint))
            self._append(series, at, 1)
            series.last_seen = max(series.last_seen, at)
            self._newest = max(self._newest, at)
            if self._newest - self._pruned_at >= self.bucket_s:
                self._prune()  # after the first, as one call each would (the others cannot prune again)
            if count > 1:
                self._append(series, at, count - 1)

    def _append(self, series: _Series, at: float, count: int) -> None:
        """`count` times `at` after the series' exact times; the oldest beyond `max_timestamps` (first
        the older exact times, then as many of the new ones as need be) are folded into their buckets."""
        recent, buckets = series.recent, series.buckets
        overflow = len(recent) + count - self.max_timestamps
        if overflow > 0:
            if overflow >= len(recent):  # all of them, counted by time: a flood's share a few times
                folded = Counter(recent).items()
                recent.clear()
            else:  # the oldest `overflow`: as many as come, so a record costs O(1), not a copy of the rest
                folded = Counter(recent.popleft() for _ in range(overflow)).items()
            for time_folded, times in folded:
                index = int(time_folded // self.bucket_s)
                buckets[index] = buckets.get(index, 0) + times
            new_folded = count - (self.max_timestamps - len(recent))
            if new_folded > 0:
                index = int(at // self.bucket_s)
                buckets[index] = buckets.get(index, 0) + new_folded
                count -= new_folded
        if count == 1:
            recent.append(at)
        else:
            recent.extend(repeat(at, count))

    def counts(self, service: str, start: float, end: float) -> dict[str, int]:
        """Errors per fingerprint with `start <= at < end`; fingerprints with none are left out."""
        if end < start:
            raise ValueError(f"window end {end} is before its start {start}")
        result: dict[str, int] = {}
        with self._lock:
            for fingerprint, series in self._series.get(service, {}).items():
                count = sum(1 for at in series.recent if start <= at < end)
                count += sum(n for index, n in series.buckets.items() if start <= index * self.bucket_s < end)
                if count:
                    result[fingerprint] = count
        return result

    def stored(self) -> int:
        """How many timestamps and bucket counters are held: the ledger's memory, for monitoring."""
        with self._lock:
            return sum(
                len(series.recent) + len(series.buckets)
                for by_fingerprint in self._series.values()
                for series in by_fingerprint.values()
            )

    # --- persistence: the store keeps what the verdict's "before" window needs over a daemon restart ----

    def restore(self, kept: Iterable[ErrorSeries]) -> None:
        """Load series saved from `take_changes`, within the ledger's bounds (the most recently seen
        fingerprints are kept); what is already held in memory wins."""
        with self._lock:
            for item in sorted(kept, key=lambda series: series.last_seen):
                by_fingerprint = self._series.setdefault(item.service, OrderedDict())
                if item.fingerprint in by_fingerprint:
                    continue
                recent = deque(sorted(item.recent)[-self.max_timestamps :], maxlen=self.max_timestamps)
                by_fingerprint[item.fingerprint] = _Series(recent, dict(item.buckets), item.last_seen)
                while len(by_fingerprint) > self.max_fingerprints:
                    evicted, _ = by_fingerprint.popitem(last=False)
                    self._drop((item.service, evicted))
                self._newest = max(self._newest, item.last_seen)
            self._prune()

    def take_changes(self) -> tuple[list[ErrorSeries], list[tuple[str, str]]]:
        """The series recorded or pruned since the last call, and the (service, fingerprint) pairs
        dropped; the caller saves them. `keep_changes` puts them back when that failed."""
        with self._lock:
            changed: list[ErrorSeries] = []
            for service, fingerprint in sorted(self._changed):
                by_fingerprint = self._series.get(service)
                series = by_fingerprint.get(fingerprint) if by_fingerprint is not None else None
                if series is not None:
                    changed.append(
                        ErrorSeries(
                            service,
                            fingerprint,
                            series.last_seen,
                            tuple(series.recent),
                            tuple(sorted(series.buckets.items())),
                        )
                    )
            dropped = sorted(self._dropped)
            self._changed.clear()
            self._dropped.clear()
            return changed, dropped

    def keep_changes(self, changed: Iterable[ErrorSeries], dropped: Iterable[tuple[str, str]]) -> None:
        """Saving what `take_changes` gave failed: it is taken again next time."""
        with self._lock:
            for item in changed:
                self._changed.add((item.service, item.fingerprint))
            for key in dropped:
                if key[1] not in self._series.get(key[0], {}):
                    self._dropped.add(key)

    def _drop(self, key: tuple[str, str]) -> None:
        self._changed.discard(key)
        self._dropped.add(key)

    def _prune(self) -> None:
        cutoff = self._newest - self.horizon_s
        for service in list(self._series):
            by_fingerprint = self._series[service]
            for fingerprint in list(by_fingerprint):
                series = by_fingerprint[fingerprint]
                stale = [i for i in series.buckets if (i + 1) * self.bucket_s <= cutoff]
                if stale or (series.recent and series.recent[0] < cutoff):
                    self._changed.add((service, fingerprint))
                while series.recent and series.recent[0] < cutoff:
                    series.recent.popleft()
                for index in stale:
                    del series.buckets[index]
                if not series.recent and not series.buckets:
                    del by_fingerprint[fingerprint]
                    self._drop((service, fingerprint))
            if not by_fingerprint:
                del self._series[service]
        self._pruned_at = self._newest


# --- probes ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProbeResult:
    process_up: bool | None = None  # None: not probed, or the manager cannot tell (UNKNOWN)
    http_status: int | None = None  # None: not probed; NO_HTTP_ANSWER (0): probed, no answer
    http_latency_ms: float | None = None
    tcp_ok: bool | None = None  # None: not probed
    detail: str = ""


async def probe(cfg: HealthConfig, manager: ServiceManager | None) -> ProbeResult:
    """Run the configured probes concurrently. Never raises for a probe failure."""
    process = _probe_process(manager) if cfg.process and manager is not None else _nothing_process()
    http = _probe_http(cfg.http_url, cfg.http_timeout_s) if cfg.http_url else _nothing_http()
    tcp = _probe_tcp(cfg.tcp_host, cfg.tcp_port, cfg.http_timeout_s) if cfg.tcp_port else _nothing_tcp()
    (process_up, process_detail), (status, latency, http_detail), (tcp_ok, tcp_detail) = await asyncio.gather(
        process, http, tcp
    )
    detail = "; ".join(part for part in (process_detail, http_detail, tcp_detail) if part)
    return ProbeResult(process_up, status, latency, tcp_ok, detail)


async def _nothing_process() -> tuple[bool | None, str]:
    return None, ""


async def _nothing_http() -> tuple[int | None, float | None, str]:
    return None, None, ""


async def _nothing_tcp() -> tuple[bool | None, str]:
    return None, ""


async def _probe_process(manager: ServiceManager) -> tuple[bool | None, str]:
    try:
        status = await asyncio.to_thread(manager.status)
    except Exception as exc:  # a failing manager is a failed probe, never a crash of the caller
        return False, f"process: status unavailable: {exc}"
    up = None if status.state is ServiceState.UNKNOWN else status.state is ServiceState.RUNNING
    words = status.detail or status.state.value
    if status.pid:
        words += f", pid {status.pid}"
    return up, f"process: {words}"


async def _probe_http(url: str, timeout_s: float) -> tuple[int | None, float | None, str]:
    return await asyncio.to_thread(_http_get, url, timeout_s)


def _http_get(url: str, timeout_s: float) -> tuple[int | None, float | None, str]:
    parts = urlsplit(url)
    shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()  # never show credentials
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    started = time.perf_counter()
    try:
        connection = connection_class(parts.hostname or "127.0.0.1", parts.port, timeout=timeout_s)
        try:
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            connection.request("GET", path, headers={"User-Agent": "healbot-health"})
            response = connection.getresponse()
            response.read(_HTTP_BODY_LIMIT)
            status = response.status
        finally:
            connection.close()
    except TimeoutError:
        return NO_HTTP_ANSWER, None, f"http: GET {shown} timed out after {timeout_s:g}s"
    except ConnectionRefusedError:
        return NO_HTTP_ANSWER, None, f"http: GET {shown}: connection refused"
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return NO_HTTP_ANSWER, None, f"http: GET {shown} failed: {type(exc).__name__}: {exc}"
    latency_ms = (time.perf_counter() - started) * 1000
    return status, latency_ms, f"http: GET {shown} → {status} in {latency_ms:.0f} ms"


async def _probe_tcp(host: str, port: int | None, timeout_s: float) -> tuple[bool | None, str]:
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except TimeoutError:
        return False, f"tcp: {host}:{port} timed out after {timeout_s:g}s"
    except ConnectionRefusedError:
        return False, f"tcp: {host}:{port}: connection refused"
    except OSError as exc:
        return False, f"tcp: {host}:{port}: {exc.strerror or exc}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True, f"tcp: {host}:{port} accepts connections"


# --- snapshot and verdict --------------------------------------------------------------------------


def snapshot(probe: ProbeResult, errors: Mapping[str, int], at: float, window_s: float) -> HealthSnapshot:
    """A probe plus the error counts of one window (as from `ErrorLedger.counts`)."""
    if window_s < 0:
        raise ValueError(f"window_s must not be negative, not {window_s}")
    for fingerprint, count in errors.items():
        if count < 0:
            raise ValueError(f"error count of {fingerprint!r} must not be negative, not {count}")
    by_fingerprint = tuple(sorted((fp, count) for fp, count in errors.items() if count > 0))
    return HealthSnapshot(
        at=at,
        process_up=probe.process_up,
        http_status=probe.http_status,
        http_latency_ms=probe.http_latency_ms,
        tcp_ok=probe.tcp_ok,
        errors_total=sum(count for _fp, count in by_fingerprint),
        errors_by_fingerprint=by_fingerprint,
        window_s=window_s,
        detail=probe.detail,
    )


def verdict(
    before: HealthSnapshot, after: HealthSnapshot, target_fingerprint: str
) -> tuple[Verdict, tuple[str, ...]]:
    """Compare health before and after a change. Pure; every reason is a sentence for the operator.

    WORSE when any of these holds (all that hold are listed):
      - the process is down after the change (process_up is False);
      - HTTP answered 2xx/3xx before and does not after (an error status or no answer);
      - the TCP port accepted connections before and does not after;
      - an error fingerprint that was not seen before appears after (the target included);
      - the total error rate went up.
    Otherwise INCONCLUSIVE when nothing was measured: no probe result on either side and no errors
    before or after.
    Otherwise BETTER when the target fingerprint's rate went down (or to zero), the process came back
    up, or HTTP recovered to 2xx/3xx.
    Otherwise SAME.
    Counts are compared as rates when the two windows differ in length.
    """
    worse = _worse_reasons(before, after)
    if worse:
        return Verdict.WORSE, tuple(worse)
    if not _measured(before) and not _measured(after):
        return Verdict.INCONCLUSIVE, (
            "nothing was measured: no process, HTTP or TCP probe result and no errors before or after",
        )
    better = _better_reasons(before, after, target_fingerprint)
    if better:
        return Verdict.BETTER, tuple(better)
    target_before = _count(before, target_fingerprint)
    target_after = _count(after, target_fingerprint)
    return Verdict.SAME, (
        f"the target error {target_fingerprint} was seen {target_before} time(s) before and {target_after} "
        f"after ({_window(before)} / {_window(after)}); nothing else changed",
    )


def _worse_reasons(before: HealthSnapshot, after: HealthSnapshot) -> list[str]:
    reasons: list[str] = []
    if after.process_up is False:
        was = " (it was up before)" if before.process_up else ""
        reasons.append(f"the process is down after the change{was}")
    if _http_ok(before.http_status) and after.http_status is not None and not _http_ok(after.http_status):
        reasons.append(f"HTTP health went from {before.http_status} to {_http_words(after.http_status)}")
    if before.tcp_ok is True and after.tcp_ok is False:
        reasons.append("the TCP port accepted connections before and refuses them after")
    seen_before = {fp for fp, _count in before.errors_by_fingerprint}
    new = [f"{fp} ({count})" for fp, count in after.errors_by_fingerprint if fp not in seen_before]
    if new:
        reasons.append(f"new error fingerprint(s) after the change: {', '.join(new)}")
    if _rate_went_up(before.errors_total, before.window_s, after.errors_total, after.window_s):
        reasons.append(
            f"errors went up: {before.errors_total} in {_window(before)} before, "
            f"{after.errors_total} in {_window(after)} after"
        )
    return reasons


def _better_reasons(before: HealthSnapshot, after: HealthSnapshot, target: str) -> list[str]:
    reasons: list[str] = []
    target_before, target_after = _count(before, target), _count(after, target)
    if _rate_went_up(target_after, after.window_s, target_before, before.window_s):
        change = "is gone" if target_after == 0 else "went down"
        reasons.append(
            f"the target error {target} {change}: {target_before} in {_window(before)} before, "
            f"{target_after} in {_window(after)} after"
        )
    if before.process_up is False and after.process_up is True:
        reasons.append("the process is up again")
    if before.http_status is not None and not _http_ok(before.http_status) and _http_ok(after.http_status):
        reasons.append(f"HTTP health recovered from {_http_words(before.http_status)} to {after.http_status}")
    return reasons


def _measured(snapshot: HealthSnapshot) -> bool:
    probed = (snapshot.process_up, snapshot.http_status, snapshot.tcp_ok)
    return any(value is not None for value in probed) or snapshot.errors_total > 0


def _http_ok(status: int | None) -> bool:
    return status is not None and 200 <= status < 400


def _http_words(status: int) -> str:
    return "no answer" if status == NO_HTTP_ANSWER else str(status)


def _count(snapshot: HealthSnapshot, fingerprint: str) -> int:
    return dict(snapshot.errors_by_fingerprint).get(fingerprint, 0)


def _rate_went_up(before: int, before_window_s: float, after: int, after_window_s: float) -> bool:
    if before_window_s > 0 and after_window_s > 0:
        return after * before_window_s > before * after_window_s
    return after > before


def _window(snapshot: HealthSnapshot) -> str:
    return f"{round(snapshot.window_s, 1):g}s" if snapshot.window_s > 0 else "the window"
