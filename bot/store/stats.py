"""Counts for monitoring (`/metrics`), read at scrape time.

Every count is grouped by a bounded label only (service, kind, state, verdict, outcome): never by
incident, fingerprint or proposal. Incidents and diagnoses are append-only and the columns they are grouped
by never change, so their totals are read incrementally (`*_since`: the rows after the last id counted, in
batches, the store's lock released between batches); the rest are small tables or indexed (migration 13).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from bot.models import ChangeStatus, ProposalStatus
from bot.store.connection import StoreBase

ALERT_FINGERPRINT_PREFIX = "alert-"  # incidents opened by an Alertmanager alert (bot/observability/alerts)
BREAKER_NOTICE_PREFIX = "breaker_notice:"  # one setting per incident a tripped breaker escalated
BATCH_ROWS = 20_000

_KIND = f"CASE WHEN fingerprint LIKE '{ALERT_FINGERPRINT_PREFIX}%' THEN 'alert' ELSE 'log' END"


@dataclass(frozen=True, slots=True)
class DiagnosisTotals:
    service: str
    outcome: str  # "ok" or "failed"
    count: int
    seconds: float
    cost_usd: float


@dataclass(frozen=True, slots=True)
class StoreCounts:
    """The current state: what `/metrics` shows as gauges, and the counters of the small tables."""

    incidents_open: tuple[tuple[str, str, int], ...]  # (service, kind, count)
    proposals: tuple[tuple[str, int], ...]  # (state, count)
    applies: tuple[tuple[str, str, int], ...]  # (service, kind, count)
    verdicts: tuple[tuple[str, str, int], ...]  # (service, verdict, count)
    reverts: tuple[tuple[str, int], ...]  # (service, count)
    breaker_trips: tuple[tuple[str, int], ...]  # (service, count)
    approvals_waiting: int
    oldest_approval_created_at: float | None
    outbox_pending: int


class StatsQueries(StoreBase):
    def store_counts(self) -> StoreCounts:
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN")  # one snapshot: the counts agree with each other
            try:

                def rows(sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
                    return list(conn.execute(sql, params).fetchall())

                open_ = rows(
                    f"SELECT service, {_KIND}, COUNT(*) FROM incidents WHERE is_open = 1 GROUP BY 1, 2"
                )
                proposals = rows("SELECT status, COUNT(*) FROM proposals GROUP BY 1")
                applies = rows(
                    "SELECT service, kind, COUNT(*) FROM changes WHERE status != ? GROUP BY 1, 2",
                    (ChangeStatus.FAILED.value,),
                )
                verdicts = rows(
                    "SELECT c.service, o.verdict, COUNT(*) FROM outcomes o JOIN changes c ON c.id = o.change_id"
                    " GROUP BY 1, 2"
                )
                reverts = rows(
                    "SELECT service, COUNT(*) FROM changes WHERE status = ? GROUP BY 1",
                    (ChangeStatus.REVERTED.value,),
                )
                breakers = rows(
                    "SELECT i.service, COUNT(*) FROM settings s"
                    " JOIN incidents i ON i.id = CAST(substr(s.key, ?) AS INTEGER)"
                    " WHERE s.key >= ? AND s.key < ? GROUP BY 1",
                    (
                        len(BREAKER_NOTICE_PREFIX) + 1,
                        BREAKER_NOTICE_PREFIX,
                        BREAKER_NOTICE_PREFIX[:-1] + chr(ord(BREAKER_NOTICE_PREFIX[-1]) + 1),
                    ),
                )
                waiting = conn.execute(
                    "SELECT COUNT(*), MIN(created_at) FROM proposals WHERE status = ?",
                    (ProposalStatus.PENDING.value,),
                ).fetchone()
                outbox = conn.execute("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").fetchone()
            finally:
                conn.execute("COMMIT")
        return StoreCounts(
            incidents_open=tuple((str(s), str(k), int(n)) for s, k, n in open_),
            proposals=tuple((str(s), int(n)) for s, n in proposals),
            applies=tuple((str(s), str(k), int(n)) for s, k, n in applies),
            verdicts=tuple((str(s), str(v), int(n)) for s, v, n in verdicts),
            reverts=tuple((str(s), int(n)) for s, n in reverts),
            breaker_trips=tuple((str(s), int(n)) for s, n in breakers),
            approvals_waiting=int(waiting[0]),
            oldest_approval_created_at=None if waiting[1] is None else float(waiting[1]),
            outbox_pending=int(outbox[0]),
        )

    def incidents_opened_since(self, after_id: int) -> tuple[int, Sequence[tuple[str, str, int]]]:
        """Incidents with an id above `after_id`, at most BATCH_ROWS of them: the last id counted and the
        counts by (service, kind). Call again from that id until it stops moving."""
        with self._lock:
            last = self._last_id("incidents", after_id)
            found = self._conn.execute(
                f"SELECT service, {_KIND}, COUNT(*) FROM incidents WHERE id > ? AND id <= ? GROUP BY 1, 2",
                (after_id, last),
            ).fetchall()
        return last, tuple((str(s), str(k), int(n)) for s, k, n in found)

    def diagnoses_since(self, after_id: int) -> tuple[int, Sequence[DiagnosisTotals]]:
        """As `incidents_opened_since`, for diagnoses by (service, outcome) with their seconds and cost."""
        with self._lock:
            last = self._last_id("diagnoses", after_id)
            found = self._conn.execute(
                "SELECT i.service, CASE WHEN d.error IS NULL THEN 'ok' ELSE 'failed' END, COUNT(*),"
                " COALESCE(SUM(d.duration_s), 0), COALESCE(SUM(d.cost_usd), 0)"
                " FROM diagnoses d JOIN incidents i ON i.id = d.incident_id WHERE d.id > ? AND d.id <= ?"
                " GROUP BY 1, 2",
                (after_id, last),
            ).fetchall()
        return last, tuple(
            DiagnosisTotals(str(s), str(o), int(n), float(t), float(c)) for s, o, n, t, c in found
        )

    def _last_id(self, table: str, after_id: int) -> int:
        row = self._conn.execute(
            f"SELECT MAX(id) FROM (SELECT id FROM {table} WHERE id > ? ORDER BY id LIMIT ?)",
            (after_id, BATCH_ROWS),
        ).fetchone()
        return after_id if row[0] is None else int(row[0])


class AlertLookups(StoreBase):
    def latest_incident_of(self, service: str, fingerprint: str) -> tuple[int, bool] | None:
        """The newest incident of (service, fingerprint): its id and whether a change was made for it."""
        row = self._query_one(
            "SELECT i.id, EXISTS(SELECT 1 FROM changes c WHERE c.incident_id = i.id AND c.status != ?)"
            " FROM incidents i WHERE i.service = ? AND i.fingerprint = ? ORDER BY i.id DESC LIMIT 1",
            (ChangeStatus.FAILED.value, service, fingerprint),
        )
        return None if row is None else (int(row[0]), bool(row[1]))
