"""What `/metrics` costs (issue 16: at most 5 MB of idle RSS, no measurable CPU while nobody scrapes).

Two `healbot run` processes with the same service and shipped defaults, side by side over the same idle
window: the reference without `[metrics]`, the other with it enabled and never scraped. Then the second is
scraped N times: the CPU one scrape costs it and how long the answer takes.
"""

from __future__ import annotations

import statistics
import time
import urllib.request
from pathlib import Path

import psutil

from tests.fakes.daemon_proc import DaemonProcess
from tests.fakes.world import healbot_toml
from tests.helpers import free_port, make_repo

SCRAPES = 50
SETTLE_S = 3.0  # after start-up, before the window: imports and the first poll are done


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _config(root: Path, metrics_port: int | None) -> Path:
    root.mkdir(parents=True)
    repo = make_repo(root / "repo", {"app.py": "print('hi')\n"})
    log = root / "app.log"
    log.write_text("started\n")
    tables = {"metrics": {"enabled": True, "port": metrics_port}} if metrics_port is not None else None
    path = root / "healbot.toml"
    path.write_text(healbot_toml(root / "state", repo, [log], service="shop", tables=tables))
    return path


def run(workdir: Path, *, idle_s: float = 30.0) -> None:
    port = free_port()
    plain = DaemonProcess(_config(workdir / "plain", None))
    served = DaemonProcess(_config(workdir / "metrics", port))
    try:
        plain.wait_for("healbot running", 60)
        served.wait_for("healbot running", 60)
        time.sleep(SETTLE_S)
        processes = (psutil.Process(plain.proc.pid), psutil.Process(served.proc.pid))
        before = [_cpu(p) for p in processes]
        started = time.perf_counter()
        time.sleep(idle_s)  # the measurement window itself
        wall = time.perf_counter() - started
        shares = [100 * (_cpu(p) - cpu) / wall for p, cpu in zip(processes, before, strict=True)]
        rss = [p.memory_info().rss / 1e6 for p in processes]
        extra = rss[1] - rss[0]
        print(
            f"/metrics: two `healbot run`, one service, {wall:.0f} s idle side by side (measured under load)"
        )
        print(f"  without [metrics]     RSS {rss[0]:6.1f} MB   CPU {shares[0]:.3f} %   reference")
        print(
            f"  enabled, not scraped  RSS {rss[1]:6.1f} MB   CPU {shares[1]:.3f} %   "
            f"extra RSS {extra:+.1f} MB (target <= 5 MB: {'met' if extra <= 5 else 'NOT met'}), "
            f"extra CPU {shares[1] - shares[0]:+.3f} %"
        )
        url = f"http://127.0.0.1:{port}/metrics"
        cpu_before = _cpu(processes[1])
        latencies = []
        for _ in range(SCRAPES):
            begun = time.perf_counter()
            with urllib.request.urlopen(url, timeout=10) as answer:
                answer.read()
            latencies.append(1000 * (time.perf_counter() - begun))
        per_scrape = 1000 * (_cpu(processes[1]) - cpu_before) / SCRAPES
        print(
            f"  scraped {SCRAPES}x           CPU {per_scrape:.2f} ms per scrape, answer p50 "
            f"{statistics.median(latencies):.1f} ms; at a 15 s scrape interval that is "
            f"{per_scrape / 150:.3f} % CPU\n"
        )
    finally:
        plain.stop()
        served.stop()
