"""bot/health.py: probes against the real tiny service, the error ledger, snapshots and the verdict table."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.config import HealthConfig
from bot.errors import ServiceError
from bot.health import NO_HTTP_ANSWER, ErrorLedger, ProbeResult, probe, snapshot, verdict
from bot.models import HealthSnapshot, ServiceStatus, Verdict
from healers.services.command import CommandManager
from tests.fakes.supervisor_env import TINY_SERVICE
from tests.helpers import free_port, wait_until


@dataclass
class Tiny:
    port: int
    pidfile: Path
    stderr: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def tiny(tmp_path: Path) -> Iterator[Tiny]:
    service = Tiny(free_port(), tmp_path / "tiny.pid", tmp_path / "tiny.err")
    env = dict(os.environ, PORT=str(service.port), PIDFILE=str(service.pidfile))
    with open(service.stderr, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, str(TINY_SERVICE)], env=env, stdout=subprocess.DEVNULL, stderr=err,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_until(lambda: _answers(service.url("/health")), what="tiny service to answer")
        yield service
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0  # SIGTERM is handled quietly


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


class BrokenManager:
    service = "web"

    def status(self) -> ServiceStatus:
        raise ServiceError("supervisord socket /run/s.sock not found")

    def restart(self, settle_s: float) -> ServiceStatus:
        raise NotImplementedError

    def log_paths(self) -> Sequence[str]:
        return ()

    def check(self) -> str | None:
        return None


# --- probes ------------------------------------------------------------------------------------------


async def test_http_probe_ok(tiny: Tiny) -> None:
    result = await probe(HealthConfig(http_url=tiny.url("/health"), process=False), None)

    assert result.http_status == 200
    assert result.http_latency_ms is not None
    assert 0 < result.http_latency_ms < 5000
    assert result.process_up is None
    assert result.tcp_ok is None
    assert result.detail.startswith(f"http: GET {tiny.url('/health')} → 200 in ")


async def test_http_probe_error_status(tiny: Tiny) -> None:
    result = await probe(HealthConfig(http_url=tiny.url("/error"), process=False), None)

    assert result.http_status == 500
    assert "KeyError: 'missing_key'" in tiny.stderr.read_text()


async def test_http_probe_refused_port_is_no_answer() -> None:
    port = free_port()

    result = await probe(HealthConfig(http_url=f"http://127.0.0.1:{port}/health", process=False), None)

    assert (result.http_status, result.http_latency_ms) == (NO_HTTP_ANSWER, None)
    assert result.detail == f"http: GET http://127.0.0.1:{port}/health: connection refused"


async def test_http_probe_timeout_is_no_answer() -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/health"

        result = await probe(HealthConfig(http_url=url, http_timeout_s=0.3, process=False), None)

    assert result.http_status == NO_HTTP_ANSWER
    assert result.detail == f"http: GET {url} timed out after 0.3s"


async def test_http_probe_never_shows_credentials_from_the_url(tiny: Tiny) -> None:
    url = f"http://admin:s3cret-pw@127.0.0.1:{tiny.port}/health"

    result = await probe(HealthConfig(http_url=url, process=False), None)

    assert result.http_status == 200
    assert "s3cret-pw" not in result.detail
    assert f"http://127.0.0.1:{tiny.port}/health" in result.detail


async def test_tcp_probe_open_and_refused(tiny: Tiny) -> None:
    refused_port = free_port()

    open_result = await probe(HealthConfig(tcp_port=tiny.port, process=False), None)
    refused = await probe(HealthConfig(tcp_port=refused_port, process=False), None)

    assert (open_result.tcp_ok, open_result.detail) == (
        True,
        f"tcp: 127.0.0.1:{tiny.port} accepts connections",
    )
    assert (refused.tcp_ok, refused.detail) == (False, f"tcp: 127.0.0.1:{refused_port}: connection refused")


async def test_process_probe_uses_the_manager(tiny: Tiny, tmp_path: Path) -> None:
    up = CommandManager("web", restart=["true"], pidfile=str(tiny.pidfile))
    (tmp_path / "dead.pid").write_text("999999999\n")
    down = CommandManager("web", restart=["true"], pidfile=str(tmp_path / "dead.pid"))
    unknowable = CommandManager("web", restart=["true"])
    cfg = HealthConfig()

    up_result = await probe(cfg, up)
    down_result = await probe(cfg, down)
    unknown_result = await probe(cfg, unknowable)
    broken_result = await probe(cfg, BrokenManager())
    not_asked = await probe(HealthConfig(process=False), up)

    assert up_result.process_up is True
    assert f"pid {tiny.pidfile.read_text().strip()}" in up_result.detail
    assert down_result.process_up is False
    assert unknown_result.process_up is None
    assert broken_result == ProbeResult(
        process_up=False, detail="process: status unavailable: supervisord socket /run/s.sock not found"
    )
    assert not_asked == ProbeResult()


async def test_all_probes_together(tiny: Tiny) -> None:
    cfg = HealthConfig(http_url=tiny.url("/health"), tcp_port=tiny.port)

    result = await probe(cfg, CommandManager("web", restart=["true"], pidfile=str(tiny.pidfile)))

    assert (result.process_up, result.http_status, result.tcp_ok) == (True, 200, True)
    assert [part.split(":")[0] for part in result.detail.split("; ")] == ["process", "http", "tcp"]


# --- error ledger ------------------------------------------------------------------------------------


def test_ledger_counts_per_fingerprint_in_half_open_windows() -> None:
    ledger = ErrorLedger()
    for at in (100.0, 101.0, 110.0):
        ledger.record("web", "fp-a", at)
    ledger.record("web", "fp-b", 105.0)
    ledger.record("api", "fp-a", 105.0)

    assert ledger.counts("web", 100.0, 110.0) == {"fp-a": 2, "fp-b": 1}
    assert ledger.counts("web", 110.0, 120.0) == {"fp-a": 1}
    assert ledger.counts("api", 0.0, 1000.0) == {"fp-a": 1}
    assert ledger.counts("db", 0.0, 1000.0) == {}


def test_ledger_memory_is_bounded_but_counts_stay_right() -> None:
    ledger = ErrorLedger(max_timestamps=5, bucket_s=10.0)
    for second in range(1000):
        ledger.record("web", "fp-a", 1000.0 + second)

    assert ledger.counts("web", 0.0, 10_000.0) == {"fp-a": 1000}
    assert ledger.counts("web", 1500.0, 1600.0) == {"fp-a": 100}  # folded into 10 s buckets
    assert ledger.counts("web", 1995.0, 2000.0) == {"fp-a": 5}  # the newest are exact
    assert ledger.stored() <= 5 + 100


@pytest.mark.parametrize("seed", range(40))
def test_ledger_record_of_a_count_is_that_many_records_of_one(seed: int) -> None:
    """Issue 13 (a flood's ledger writes, one per fingerprint and chunk): `record(..., count=n)` leaves the
    ledger exactly as n calls of one do, whether the exact times overflow into buckets, part or all of them,
    times go back, a fingerprint is evicted or the horizon prunes."""
    rng = random.Random(seed)
    options = {
        "max_timestamps": rng.choice((1, 3, 8)),
        "bucket_s": 10.0,
        "horizon_s": 60.0,
        "max_fingerprints": 2,
    }
    counted, one_by_one = ErrorLedger(**options), ErrorLedger(**options)
    at = 1000.0
    for _ in range(60):
        at += rng.choice((0.0, 0.5, 3.0, 11.0, 70.0, -4.0))
        fingerprint, count = rng.choice(("fp-a", "fp-b", "fp-c")), rng.choice((1, 2, 3, 7, 8, 9, 20))
        counted.record("web", fingerprint, at, count)
        for _ in range(count):
            one_by_one.record("web", fingerprint, at)
        assert counted.take_changes() == one_by_one.take_changes()
        assert counted.counts("web", 0.0, 1e9) == one_by_one.counts("web", 0.0, 1e9)
        assert counted.stored() == one_by_one.stored()


def test_ledger_rejects_a_count_below_one_and_changes_nothing() -> None:
    ledger = ErrorLedger()
    with pytest.raises(ValueError, match="count must be at least 1"):
        ledger.record("web", "fp-a", 100.0, 0)
    assert ledger.take_changes() == ([], [])


def test_ledger_prunes_beyond_the_horizon() -> None:
    ledger = ErrorLedger(horizon_s=100.0, bucket_s=10.0)
    ledger.record("web", "old", 0.0)
    ledger.record("web", "new", 500.0)

    assert ledger.counts("web", 0.0, 1000.0) == {"new": 1}
    assert ledger.stored() == 1


def test_ledger_drops_the_stalest_fingerprint_when_full() -> None:
    ledger = ErrorLedger(max_fingerprints=2)
    ledger.record("web", "a", 1.0)
    ledger.record("web", "b", 3.0)
    ledger.record("web", "a", 4.0)
    ledger.record("web", "c", 5.0)

    assert ledger.counts("web", 0.0, 10.0) == {"a": 2, "c": 1}


@pytest.mark.parametrize("option", ["max_timestamps", "bucket_s", "horizon_s", "max_fingerprints"])
def test_ledger_rejects_non_positive_limits(option: str) -> None:
    with pytest.raises(ValueError, match=f"{option} must be greater than 0, not 0"):
        ErrorLedger(**{option: 0})  # type: ignore[arg-type]


def test_ledger_rejects_a_reversed_window_and_changes_nothing() -> None:
    ledger = ErrorLedger()
    ledger.record("web", "a", 5.0)

    with pytest.raises(ValueError, match=r"window end 1\.0 is before its start 9\.0"):
        ledger.counts("web", 9.0, 1.0)

    assert ledger.counts("web", 0.0, 10.0) == {"a": 1}


# --- snapshot ----------------------------------------------------------------------------------------


def test_snapshot_copies_the_probe_and_sorts_nonzero_counts() -> None:
    result = ProbeResult(process_up=True, http_status=200, http_latency_ms=3.5, tcp_ok=True, detail="ok")

    snap = snapshot(result, {"zz": 2, "aa": 1, "none": 0}, at=1000.0, window_s=30.0)

    assert snap == HealthSnapshot(
        at=1000.0, process_up=True, http_status=200, http_latency_ms=3.5, tcp_ok=True, errors_total=3,
        errors_by_fingerprint=(("aa", 1), ("zz", 2)), window_s=30.0, detail="ok",
    )  # fmt: skip


def test_snapshot_rejects_negative_counts_and_windows() -> None:
    with pytest.raises(ValueError, match="error count of 'a' must not be negative, not -1"):
        snapshot(ProbeResult(), {"a": -1}, at=0.0, window_s=30.0)
    with pytest.raises(ValueError, match="window_s must not be negative"):
        snapshot(ProbeResult(), {}, at=0.0, window_s=-1.0)


# --- verdict -----------------------------------------------------------------------------------------


def snap(
    *,
    up: bool | None = None,
    http: int | None = None,
    tcp: bool | None = None,
    errors: dict[str, int] | None = None,
    window: float = 30.0,
) -> HealthSnapshot:
    result = ProbeResult(process_up=up, http_status=http, tcp_ok=tcp)
    return snapshot(result, errors or {}, at=0.0, window_s=window)


VERDICT_TABLE = [
    pytest.param(
        snap(up=True, errors={"T": 5}),
        snap(up=False),
        Verdict.WORSE,
        ["the process is down after the change (it was up before)"],
        id="process-went-down",
    ),
    pytest.param(
        snap(up=False, errors={"T": 5}),
        snap(up=False),
        Verdict.WORSE,
        ["the process is down after the change"],
        id="process-still-down",
    ),
    pytest.param(
        snap(http=200, errors={"T": 5}),
        snap(http=500),
        Verdict.WORSE,
        ["HTTP health went from 200 to 500"],
        id="http-ok-to-500",
    ),
    pytest.param(
        snap(http=204),
        snap(http=NO_HTTP_ANSWER),
        Verdict.WORSE,
        ["HTTP health went from 204 to no answer"],
        id="http-ok-to-no-answer",
    ),
    pytest.param(
        snap(tcp=True),
        snap(tcp=False),
        Verdict.WORSE,
        ["the TCP port accepted connections before and refuses them after"],
        id="tcp-closed",
    ),
    pytest.param(
        snap(errors={"T": 5}),
        snap(errors={"N": 1}),
        Verdict.WORSE,
        ["new error fingerprint(s) after the change: N (1)"],
        id="new-fingerprint-even-though-target-gone",
    ),
    pytest.param(
        snap(errors={"T": 3}),
        snap(errors={"T": 7}),
        Verdict.WORSE,
        ["errors went up: 3 in 30s before, 7 in 30s after"],
        id="errors-up",
    ),
    pytest.param(
        snap(errors={"T": 10}, window=60.0),
        snap(errors={"T": 6}, window=30.0),
        Verdict.WORSE,
        ["errors went up: 10 in 60s before, 6 in 30s after"],
        id="rate-up-over-shorter-window",
    ),
    pytest.param(
        snap(up=True, http=200, errors={"T": 2}),
        snap(up=False, http=503, errors={"T": 2, "N": 4}),
        Verdict.WORSE,
        [
            "the process is down after the change (it was up before)",
            "HTTP health went from 200 to 503",
            "new error fingerprint(s) after the change: N (4)",
            "errors went up: 2 in 30s before, 6 in 30s after",
        ],
        id="all-worse-reasons-listed",
    ),
    pytest.param(
        snap(up=True, http=200, errors={"T": 5}),
        snap(up=True, http=200),
        Verdict.BETTER,
        ["the target error T is gone: 5 in 30s before, 0 in 30s after"],
        id="target-gone",
    ),
    pytest.param(
        snap(errors={"T": 5, "O": 1}),
        snap(errors={"T": 2, "O": 1}),
        Verdict.BETTER,
        ["the target error T went down: 5 in 30s before, 2 in 30s after"],
        id="target-down",
    ),
    pytest.param(
        snap(up=False),
        snap(up=True),
        Verdict.BETTER,
        ["the process is up again"],
        id="process-recovered",
    ),
    pytest.param(
        snap(http=502),
        snap(http=200),
        Verdict.BETTER,
        ["HTTP health recovered from 502 to 200"],
        id="http-recovered",
    ),
    pytest.param(
        snap(),
        snap(),
        Verdict.INCONCLUSIVE,
        ["nothing was measured: no process, HTTP or TCP probe result and no errors before or after"],
        id="nothing-measured",
    ),
    pytest.param(
        snap(up=True, http=200),
        snap(up=True, http=200),
        Verdict.SAME,
        ["the target error T was seen 0 time(s) before and 0 after (30s / 30s); nothing else changed"],
        id="healthy-and-target-never-seen",
    ),
    pytest.param(
        snap(errors={"T": 4}),
        snap(errors={"T": 4}),
        Verdict.SAME,
        ["the target error T was seen 4 time(s) before and 4 after (30s / 30s); nothing else changed"],
        id="target-unchanged",
    ),
]


@pytest.mark.parametrize(("before", "after", "expected", "reasons"), VERDICT_TABLE)
def test_verdict_table(
    before: HealthSnapshot, after: HealthSnapshot, expected: Verdict, reasons: list[str]
) -> None:
    assert verdict(before, after, "T") == (expected, tuple(reasons))
