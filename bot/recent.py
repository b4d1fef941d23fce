"""The most frequent recent error of a service, read from the tails of its log files (for on-demand diagnosis)."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.grouping import fingerprint
from bot.models import Fingerprint, LogLine
from bot.records import RecordAssembler

DEFAULT_TAIL_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class RecentError:
    fingerprint: Fingerprint
    sample: str  # the latest record of that fingerprint, not yet redacted
    count: int


def _tail_lines(path: Path, tail_bytes: int) -> list[LogLine]:
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - tail_bytes))
        data = handle.read()
    lines = data.decode("utf-8", errors="replace").splitlines()
    if size > tail_bytes and lines:
        lines = lines[1:]  # the first line is probably cut
    return [LogLine(line[:8192], f"file:{path}", i + 1) for i, line in enumerate(lines)]


def most_frequent_error(
    service: str,
    paths: Sequence[Path],
    tail_bytes: int = DEFAULT_TAIL_BYTES,
    skip: Callable[[str], bool] = lambda key: False,
) -> tuple[RecentError | None, list[str]]:
    """Return the commonest error group in the tails of `paths` whose fingerprint key is not `skip`ped
    (a muted one), and the paths that could not be read."""
    counts: Counter[str] = Counter()
    latest: dict[str, tuple[Fingerprint, str]] = {}
    skipped: list[str] = []
    for path in paths:
        try:
            lines = _tail_lines(path, tail_bytes)
        except OSError as exc:
            skipped.append(f"{path}: {exc.strerror or exc}")
            continue
        assembler = RecordAssembler(service, f"file:{path}")
        now = time.time()
        for record in assembler.feed(lines, now) + assembler.flush():
            fp = fingerprint(record)
            if fp.is_error and not skip(fp.key):
                counts[fp.key] += 1
                latest[fp.key] = (fp, record.text)
    if not counts:
        return None, skipped
    key, count = counts.most_common(1)[0]
    fp, sample = latest[key]
    return RecentError(fp, sample, count), skipped
