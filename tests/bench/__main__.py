"""Run every benchmark and print its figures with their references (`make bench`)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

from tests.bench import bench_daemon, bench_runner, bench_scan, incidents, loghub


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench")
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines in the generated log")
    parser.add_argument("--idle-s", type=float, default=60.0, help="idle footprint window (issue: 600)")
    parser.add_argument("--appends", type=int, default=200, help="appends for the latency figure")
    parser.add_argument("--flood-lines", type=int, default=1_000_000, help="error lines in the flood")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    print("healbot benchmarks (ratios are against a reference measured in the same run)\n")
    loghub.run()
    with tempfile.TemporaryDirectory() as tmp:
        incidents.run(Path(tmp))
    bench_scan.run(args.lines)
    with tempfile.TemporaryDirectory() as tmp:
        bench_runner.run(Path(tmp))
    with tempfile.TemporaryDirectory() as tmp:
        bench_daemon.run(Path(tmp), idle_s=args.idle_s, appends=args.appends, flood_lines=args.flood_lines)
    if importlib.util.find_spec("tests.bench.bench_telegram") is not None:
        from tests.bench import bench_telegram

        bench_telegram.run()
    print(f"\nall benchmarks: {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
