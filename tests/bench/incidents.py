"""Synthetic multi-line service logs with K distinct fault sites; ground truth by construction.

Each fault site is one (exception type, innermost frames) pair; its occurrences vary the message, the ids,
the line numbers and the framing (plain, PM2 `--time`, PM2 `--log-date-format`, supervisord raw), and come
between access-log lines, INFO noise and restart noise (PM2's KeyboardInterrupt tracebacks, which are no
incident). Incident GA: every error record of one site must share one key, and no key two sites.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bot.grouping import scan_file
from tests.bench.loghub import grouping_accuracy

FRAMINGS: tuple[Callable[[str], str], ...] = (
    lambda line: line,
    lambda line: f"2026-11-26T06:00:00: {line}",
    lambda line: f"2026-11-26 06:00:00.123 +00:00: {line}",
)


@dataclass(frozen=True, slots=True)
class Site:
    kind: str  # "python" | "java" | "chained"
    exception: str
    frames: tuple[tuple[str, str], ...]  # (file, function), outermost first


def sites(k: int, rng: random.Random) -> list[Site]:
    made: list[Site] = []
    for i in range(k):
        kind = ("python", "java", "chained")[i % 3]
        frames = tuple(
            (f"mod{i}_{j}.py" if kind != "java" else f"Svc{i}{j}.java", f"step{i}_{j}") for j in range(3)
        )
        exception = ("KeyError", "ValueError", "java.lang.IllegalStateException", "RuntimeError")[
            rng.randrange(4)
        ]
        if kind == "java" and not exception.startswith("java"):
            exception = "java.io.IOException"
        if kind != "java" and exception.startswith("java"):
            exception = "TimeoutError"
        made.append(Site(kind, exception, frames))
    return made


def occurrence(site: Site, rng: random.Random) -> list[str]:
    ident = rng.randrange(10**6)
    if site.kind == "java":
        lines = [
            f"2026-11-26 06:00:00,{rng.randrange(1000):03d} ERROR [worker-{rng.randrange(9)}] svc - job {ident} failed"
        ]
        lines.append(f"{site.exception}: cannot process order {ident}")
        for file, function in reversed(site.frames):
            lines.append(f"\tat com.shop.{file[:-5]}.{function}({file}:{rng.randrange(10, 400)})")
        lines.append(f"\t... {rng.randrange(2, 9)} more")
        return lines
    lines = [
        f"2026-11-26 06:00:00,{rng.randrange(1000):03d} ERROR svc[{rng.randrange(100, 999)}]: request {ident} failed"
    ]
    lines.append("Traceback (most recent call last):")
    if site.kind == "chained":
        lines += ['  File "/srv/app/db.py", line 10, in fetch', "    raise OSError(5)", "OSError: 5", ""]
        lines += ["During handling of the above exception, another exception occurred:", ""]
        lines.append("Traceback (most recent call last):")
    for file, function in site.frames:
        lines.append(f'  File "/srv/app/{file}", line {rng.randrange(10, 400)}, in {function}')
        lines.append(f"    result = {function}(order_{ident})")
    lines.append(f"{site.exception}: 'order-{ident}' has no price (user {rng.randrange(1000)})")
    return lines


NOISE = (
    lambda rng: f'127.0.0.1 - - [26/Nov/2026 06:00:00] "GET /items/{rng.randrange(999)} HTTP/1.1" 200 -',
    lambda rng: f"2026-11-26 06:00:00,000 INFO svc[{rng.randrange(999)}]: served {rng.randrange(999)} in 3 ms",
    lambda rng: "\n".join(
        ["Traceback (most recent call last):", '  File "/srv/app/main.py", line 9, in <module>', "    serve()",
         "KeyboardInterrupt"]
    ),
)  # fmt: skip


def generate(path: Path, k: int, occurrences: int, seed: int = 5) -> dict[int, int]:
    """Write the log; return {1-based first line of each incident record: site index}."""
    rng = random.Random(seed)
    made = sites(k, rng)
    truth: dict[int, int] = {}
    out: list[str] = []
    order = [i for i in range(k) for _ in range(occurrences)]
    rng.shuffle(order)
    for site_index in order:
        for _ in range(rng.randrange(1, 4)):
            out.extend(NOISE[rng.randrange(len(NOISE))](rng).split("\n"))
        framing = FRAMINGS[rng.randrange(len(FRAMINGS))]
        truth[len(out) + 1] = site_index
        out.extend(framing(line) for line in occurrence(made[site_index], rng))
    out.append("2026-11-26 06:00:00,000 INFO svc[1]: bye")
    path.write_text("\n".join(out) + "\n")
    return truth


def run(tmp: Path, k: int = 12, occurrences: int = 25) -> float:
    log = tmp / "incidents.log"
    truth = generate(log, k, occurrences)
    result = scan_file(log, service="svc", errors_only=True)
    error_keys = {g.key for g in result.groups}
    starts = dict(result.line_groups)
    predicted = [starts.get(line, "none") for line in truth]
    ga = grouping_accuracy(predicted, list(truth.values()))
    print(f"multi-line incidents: {k} fault sites x {occurrences} occurrences, mixed framings and noise")
    print(f"  incident GA        {ga:8.3f}  (target 1.00)")
    print(f"  error groups       {len(error_keys):8d}  (expected {k}: one incident and one diagnosis each)\n")
    return ga
