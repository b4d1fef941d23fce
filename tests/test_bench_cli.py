"""`make bench BENCH_ARGS="--only scan"` (README): one benchmark runs alone; a wrong name is refused."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO_ROOT


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.bench", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_only_scan_runs_the_scan_benchmark_alone() -> None:
    done = bench("--only", "scan", "--lines", "20000")
    assert done.returncode == 0, done.stderr
    assert "grep" in done.stdout  # the scan figure's reference
    assert "Loghub" not in done.stdout and "idle" not in done.stdout


def test_an_unknown_benchmark_is_refused_with_the_names() -> None:
    done = bench("--only", "everything")
    assert done.returncode == 2
    assert "loghub" in done.stderr and "telegram" in done.stderr
