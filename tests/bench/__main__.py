"""Run every benchmark and print its figures with their references (`make bench`)."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.bench import (
    bench_daemon,
    bench_metrics,
    bench_runner,
    bench_scan,
    bench_telegram,
    fuzz_formats,
    incidents,
    loghub,
)

NAMES = ("loghub", "fuzz", "incidents", "scan", "runner", "daemon", "telegram", "metrics")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench")
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines in the generated log")
    parser.add_argument("--idle-s", type=float, default=60.0, help="idle footprint window (issue: 600)")
    parser.add_argument("--appends", type=int, default=200, help="appends for the latency figure")
    parser.add_argument("--flood-lines", type=int, default=1_000_000, help="error lines in the flood")
    parser.add_argument(
        "--only", action="append", choices=NAMES, help="run only this benchmark (repeatable; default: all)"
    )
    args = parser.parse_args(argv)

    def in_tmp(bench: Callable[[Path], object]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            bench(Path(tmp))

    benches: dict[str, Callable[[], object]] = {
        "loghub": loghub.run,
        "fuzz": lambda: in_tmp(fuzz_formats.run),
        "incidents": lambda: in_tmp(incidents.run),
        "scan": lambda: bench_scan.run(args.lines),
        "runner": lambda: in_tmp(bench_runner.run),
        "daemon": lambda: in_tmp(
            lambda tmp: bench_daemon.run(
                tmp, idle_s=args.idle_s, appends=args.appends, flood_lines=args.flood_lines
            )
        ),
        "telegram": bench_telegram.run,
        "metrics": lambda: in_tmp(lambda tmp: bench_metrics.run(tmp, idle_s=args.idle_s)),
    }
    started = time.perf_counter()
    print("healbot benchmarks (ratios are against a reference measured in the same run)\n")
    failed = [name for name in args.only or NAMES if benches[name]() is False]
    print(f"\nall benchmarks: {time.perf_counter() - started:.1f} s")
    if failed:  # each said what failed where it ran; the ones after it ran all the same
        print(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
