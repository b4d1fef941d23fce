"""Throughput of `healbot scan` against `grep -c -E` on the same generated file."""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
import time
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


def run(lines: int) -> None:
    from bot.grouping import scan_errors

    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "big.log"
        total = generate(log, lines)
        grep_s = min(_time(["grep", "-c", "-E", "ERROR|Exception|Traceback", str(log)]) for _ in range(3))
        healbot = str(Path(sys.executable).parent / "healbot")
        scan_s = _time([healbot, "scan", str(log)])
        started = time.perf_counter()
        scan_errors(log)
        buffer_s = time.perf_counter() - started
        print(
            f"throughput: healbot scan over {total:,} lines ({log.stat().st_size / 1e6:.0f} MB, 1 % errors)"
        )
        print(f"  grep -c -E            {total / grep_s:>14,.0f} lines/s ({grep_s:.2f} s)  reference")
        print(
            f"  healbot scan (CLI)    {total / scan_s:>14,.0f} lines/s ({scan_s:.2f} s)  ratio {grep_s / scan_s:.3f}"
        )
        print(
            f"  scan_errors (buffer)  {total / buffer_s:>14,.0f} lines/s ({buffer_s:.2f} s)  "
            f"ratio {grep_s / buffer_s:.3f}  (in process; target >= 0.5)\n"
        )
