"""Heartbeat: when each log source was last scanned, and an optional dead-man's switch URL.

The daemon calls `Heartbeat.scanned` after every poll. The last scan per source is kept in memory and
written to `<state_dir>/heartbeat.json` (atomically, at most every `save_every_s` unless a source's problem
changed), so `/status` and `healbot status` in another process show the same thing. The dead-man's switch
is pinged only when a poll completed since the previous ping: a daemon whose loop is stuck goes silent and
the external monitor raises the alarm.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from bot.sources import expand_sources

if TYPE_CHECKING:
    from bot.pipeline import ServiceRuntime

log = logging.getLogger("healbot.heartbeat")

FILE_NAME = "heartbeat.json"
PING_TIMEOUT_S = 10.0
SAVE_EVERY_S = 5.0


@dataclass(frozen=True, slots=True)
class SourceScan:
    source_id: str
    service: str
    last_ok: float | None  # the last poll that read this source without an error
    problem: str | None  # the current error, if the last poll failed


@dataclass(frozen=True, slots=True)
class SourceState:
    """What the daemon knows about one source after a poll (fed from the pipeline's runtimes)."""

    source_id: str
    service: str
    problem: str | None


def heartbeat_path(state_dir: Path) -> Path:
    return state_dir / FILE_NAME


class Heartbeat:
    def __init__(self, path: Path | None, *, save_every_s: float = SAVE_EVERY_S) -> None:
        self.path = path
        self.save_every_s = save_every_s
        self._scans: dict[str, SourceScan] = {}
        self._saved_at: float | None = None
        self.polls = 0
        self._pinged_at_poll = 0

    def scanned(self, states: Iterable[SourceState], now: float) -> None:
        """One poll finished: every source without a problem was scanned at `now`."""
        self.polls += 1
        changed = False
        seen = set()
        for state in states:
            seen.add(state.source_id)
            previous = self._scans.get(state.source_id)
            last_ok = now if state.problem is None else (previous.last_ok if previous else None)
            if previous is None or previous.problem != state.problem:
                changed = True
            self._scans[state.source_id] = SourceScan(state.source_id, state.service, last_ok, state.problem)
        for gone in set(self._scans) - seen:  # a reload removed the source
            del self._scans[gone]
            changed = True
        if self.path is not None and (
            changed or self._saved_at is None or now - self._saved_at >= self.save_every_s
        ):
            self._save(self.path, now)

    def snapshot(self) -> tuple[SourceScan, ...]:
        return tuple(sorted(self._scans.values(), key=lambda s: (s.service, s.source_id)))

    def _save(self, path: Path, now: float) -> None:
        data = {"written_at": now, "sources": [_scan_json(s) for s in self.snapshot()]}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".heartbeat-", dir=path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle)
            os.replace(tmp, path)
            self._saved_at = now
        except OSError as exc:
            log.warning("cannot write the heartbeat file %s: %s", path, exc)

    def take_ping_due(self) -> bool:
        """Whether a poll completed since the last ping; marks this moment as pinged."""
        due = self.polls > self._pinged_at_poll
        self._pinged_at_poll = self.polls
        return due


def _scan_json(scan: SourceScan) -> dict[str, object]:
    return {
        "source_id": scan.source_id,
        "service": scan.service,
        "last_ok": scan.last_ok,
        "problem": scan.problem,
    }


def load_scans(state_dir: Path) -> tuple[SourceScan, ...] | None:
    """What the running daemon last wrote; None when there is no (readable) heartbeat file."""
    try:
        data = json.loads(heartbeat_path(state_dir).read_text(encoding="utf-8"))
        return tuple(
            SourceScan(str(s["source_id"]), str(s["service"]), _float_or_none(s["last_ok"]), s["problem"])
            for s in data["sources"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _float_or_none(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def scan_lines(scans: Iterable[SourceScan], now: float) -> list[str]:
    """One plain line per source, for /status and `healbot status`."""
    lines = []
    for scan in scans:
        when = "never scanned" if scan.last_ok is None else f"last scan {ago(now - scan.last_ok)}"
        problem = f" · {scan.problem}" if scan.problem else ""
        lines.append(f"{scan.service} {scan.source_id}: {when}{problem}")
    return lines


def ping_target(url: str) -> str:
    """The URL without path and query: dead-man's switch URLs carry their secret in the path."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}{f':{parts.port}' if parts.port else ''}"


def ping(url: str, *, timeout_s: float = PING_TIMEOUT_S, user_agent: str = "healbot") -> str | None:
    """GET the dead-man's switch URL (blocking; run it in a thread). None on a 2xx, else the problem."""
    request = urllib.request.Request(url, headers={"User-Agent": user_agent}, method="GET")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 (http/https only)
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        return f"{ping_target(url)} answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{ping_target(url)} unreachable: {reason}"
    if not 200 <= status < 300:
        return f"{ping_target(url)} answered HTTP {status}"
    return None


def source_states(services: Mapping[str, ServiceRuntime]) -> list[SourceState]:
    """The pipeline's runtimes after a poll → one state per source."""
    return [
        SourceState(source.source_id, name, runtime.source_errors.get(source.source_id))
        for name, runtime in services.items()
        for source in expand_sources(runtime.sources)  # with the files a manager named after start-up
    ]
