"""Run every benchmark and print its figures with their references (`make bench`)."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tests.bench import bench_scan, incidents, loghub

NOT_YET = (
    "latency (append -> incident row, p50/p95 over 200 appends; target p95 <= 250 ms)",
    "idle footprint (20 quiet files; target RSS <= 60 MB, CPU <= 0.2 % of a core)",
    "runner overhead (against bare `claude -p`; target <= 5 % extra wall time)",
    "flood (1 M error lines in 10 s, two fingerprints; target 2 incidents, <= 2 messages, <= 20 MB extra)",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench")
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines in the generated log")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    print("healbot benchmarks (ratios are against a reference measured in the same run)\n")
    loghub.run()
    with tempfile.TemporaryDirectory() as tmp:
        incidents.run(Path(tmp))
    bench_scan.run(args.lines)
    for figure in NOT_YET:
        print(f"NOT MEASURED YET: {figure}")
    print(f"\nall benchmarks: {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
