"""The error counts per fingerprint that a verdict's "before" window needs, so a daemon restart between
an error and the approval of its fix does not erase the baseline.

One row per (service, fingerprint): the newest error times exactly and older ones as counts per bucket,
as `bot.health.ErrorLedger` holds them. The ledger bounds them (times per fingerprint, fingerprints per
service, a horizon); this module writes what changed and deletes what the ledger dropped.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

from bot.store.connection import StoreBase


@dataclass(frozen=True, slots=True)
class ErrorSeries:
    """The error times of one (service, fingerprint)."""

    service: str
    fingerprint: str
    last_seen: float
    recent: tuple[float, ...]  # exact times, oldest first
    buckets: tuple[tuple[int, int], ...] = ()  # (bucket index, count) of older times


class ErrorCountQueries(StoreBase):
    def error_series(self) -> list[ErrorSeries]:
        """Every kept series, least recently seen first."""
        rows = self._query("SELECT * FROM error_counts ORDER BY last_seen, service, fingerprint")
        return [
            ErrorSeries(
                str(r["service"]),
                str(r["fingerprint"]),
                float(r["last_seen"]),
                tuple(_times(bytes(r["recent"]))),
                tuple((int(index), int(count)) for index, count in json.loads(r["buckets"])),
            )
            for r in rows
        ]

    def save_error_series(self, changed: Sequence[ErrorSeries], dropped: Sequence[tuple[str, str]]) -> None:
        """Write the series that changed and delete the (service, fingerprint) ones dropped, at once."""
        if not changed and not dropped:
            return
        with self._tx() as conn:
            conn.executemany("DELETE FROM error_counts WHERE service = ? AND fingerprint = ?", list(dropped))
            conn.executemany(
                "INSERT INTO error_counts (service, fingerprint, last_seen, recent, buckets) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(service, fingerprint) DO UPDATE SET last_seen = excluded.last_seen,"
                " recent = excluded.recent, buckets = excluded.buckets",
                [
                    (
                        s.service,
                        s.fingerprint,
                        s.last_seen,
                        array("d", s.recent).tobytes(),
                        json.dumps([list(b) for b in s.buckets]),
                    )
                    for s in changed
                ],
            )

    def prune_error_series(self, before: float) -> int:
        """Delete the series last seen before `before` (beyond any window); how many went."""
        with self._tx() as conn:
            return conn.execute("DELETE FROM error_counts WHERE last_seen < ?", (before,)).rowcount


def _times(blob: bytes) -> array[float]:
    times = array("d")
    times.frombytes(blob)
    return times
