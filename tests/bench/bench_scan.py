"""Throughput of `healbot scan` against `grep -c -E` on the same generated file."""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ACCESS = '127.0.0.1 - - [26/Nov/2026 06:{m:02d}:{s:02d}] "GET /items/{i} HTTP/1.1" 200 {n}\n'
INFO = "2026-11-26 06:{m:02d}:{s:02d},{ms:03d} INFO shop[{pid}]: served order {i} in {n} ms\n"
TRACE = (
    "2026-11-26 06:{m:02d}:{s:02d},{ms:03d} ERROR shop[{pid}]: request /checkout failed\n"
    "Traceback (most recent call last):\n"
    '  File "/srv/shop/shop.py", line 27, in checkout_total\n'
    "    price = PRICES[name]\n"
    "KeyError: 'item-{i}'\n"
)


def generate(path: Path, lines: int, error_share: float = 0.01) -> int:
    rng = random.Random(7)
    written = 0
    with path.open("w") as out:
        while written < lines:
            m, s, ms, i, n = (
                rng.randrange(60),
                rng.randrange(60),
                rng.randrange(1000),
                rng.randrange(10**6),
                rng.randrange(5000),
            )
            roll = rng.random()
            if roll < error_share / 5:
                out.write(TRACE.format(m=m, s=s, ms=ms, pid=4242, i=i))
                written += 5
            elif roll < 0.5:
                out.write(ACCESS.format(m=m, s=s, i=i, n=n))
                written += 1
            else:
                out.write(INFO.format(m=m, s=s, ms=ms, pid=4242, i=i, n=n))
                written += 1
    return written


def _time(argv: list[str]) -> float:
    started = time.perf_counter()
    # stdout is a pipe, not /dev/null: GNU grep stops at the first match when its output is /dev/null.
    subprocess.run(argv, check=False, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def _time_call(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _compile_package() -> None:
    """Bring the bytecode of the installed package up to date, as installing it does (pip compiles what it
    installs). An editable install's tree has only what earlier runs cached, and with PYTHONDONTWRITEBYTECODE
    set they cache nothing, so every timed `healbot scan` compiled each module it imports (several times
    the scan itself on this file when the cache is stale)."""
    import compileall

    import bot

    compileall.compile_dir(Path(bot.__file__).parent, quiet=2)


def run(lines: int, repeats: int = 3) -> None:
    """Each figure is the best of `repeats` runs (the machine is shared; the best run is the least disturbed)."""
    from bot import fastscan
    from bot.grouping import Grouper

    _compile_package()

    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "big.log"
        total = generate(log, lines)

        def scan(
            use_grep: bool,
        ) -> object:  # as `healbot scan` calls it (regroup: fingerprints while grep reads)
            return fastscan.scan_errors(
                log, "scan", Grouper(), max_line_bytes=8192, use_grep=use_grep, regroup=Grouper
            )

        grep_s = min(
            _time(["grep", "-c", "-E", "ERROR|Exception|Traceback", str(log)]) for _ in range(repeats)
        )
        healbot = str(Path(sys.executable).parent / "healbot")
        scan_s = min(_time([healbot, "scan", str(log)]) for _ in range(repeats))
        buffer_s = min(_time_call(lambda: scan(True)) for _ in range(repeats))
        re_s = min(_time_call(lambda: scan(False)) for _ in range(repeats))
        same = scan(True) == scan(False)
        print(
            f"throughput: healbot scan over {total:,} lines ({log.stat().st_size / 1e6:.0f} MB, 1 % errors), "
            f"best of {repeats}"
        )
        print(f"  grep -c -E               {total / grep_s:>14,.0f} lines/s ({grep_s:.3f} s)  reference")
        print(
            f"  healbot scan (CLI)       {total / scan_s:>14,.0f} lines/s ({scan_s:.3f} s)  "
            f"ratio {grep_s / scan_s:.3f}"
        )
        print(
            f"  scan_errors (grep)       {total / buffer_s:>14,.0f} lines/s ({buffer_s:.3f} s)  "
            f"ratio {grep_s / buffer_s:.3f}  (in process; target >= 0.5)"
        )
        print(
            f"  scan_errors (re only)    {total / re_s:>14,.0f} lines/s ({re_s:.3f} s)  "
            f"ratio {grep_s / re_s:.3f}  (the fallback without grep)"
        )
        print(f"  grep and re results identical: {'yes' if same else 'NO'}")
        _redaction_line(log, repeats)


def _redaction_line(log: Path, repeats: int, lines: int = 100_000) -> None:
    """bot.redact over the first `lines` lines one by one, as samples and titles are redacted."""
    from bot.redact import redact, redacted

    with log.open() as handle:
        sample = [line.rstrip("\n") for _, line in zip(range(lines), handle, strict=False)]
    best = min(_time_call(lambda: [redacted(line) for line in sample]) for _ in range(repeats))
    changed = sum(1 for line in sample if redact(line).count)
    print(
        f"  redact, line by line     {len(sample) / best:>14,.0f} lines/s ({best:.3f} s over {len(sample):,} "
        f"lines; {changed} changed)\n"
    )


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_scan", description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines in the generated log")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (the best is shown)")
    args = parser.parse_args()
    run(args.lines, args.repeats)
