"""What the pipeline-level worlds share: a tiny service with a planted KeyError, its fix, its traceback."""

from __future__ import annotations

import time
from pathlib import Path

APP = """PRICES = {"apple": 120}


def total(name):
    return PRICES[name]
"""

FIX = {
    "title": "Unknown items cost nothing",
    "rationale": "PRICES[name] raises KeyError for unknown items.",
    "risk": "low",
    "kind": "patch",
    "edits": [
        {"path": "app.py", "old": "    return PRICES[name]\n", "new": "    return PRICES.get(name, 0)\n"}
    ],
}
RESTART = {"title": "Restart", "rationale": "Clears state.", "risk": "low", "kind": "restart"}


def traceback_lines(repo: Path, exc: str = "KeyError: 'pear'", func: str = "total") -> str:
    return (
        "2026-11-26 06:00:00,000 ERROR svc[42]: request /total failed\n"
        "Traceback (most recent call last):\n"
        f'  File "{repo}/app.py", line 5, in {func}\n'
        "    return PRICES[name]\n"
        f"{exc}\n"
        '127.0.0.1 - - [26/Nov/2026 06:00:00] "GET /health HTTP/1.1" 200 -\n'
    )


class ShiftedClock:
    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic() + self.offset
