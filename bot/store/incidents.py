"""Incidents: the source cursors and the counting of observations into incidents, their states, and
the diagnoses run on them."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from bot.errors import StoreError
from bot.models import Fingerprint, Frame, Incident, IncidentState, RunStats
from bot.store.audit import append_audit
from bot.store.connection import StoreBase

SAMPLE_CAP_CHARS = 8192


@dataclass(frozen=True, slots=True)
class Observation:
    """Error records of one fingerprint seen by a source at `at`, ready to be counted into an incident:
    `count` of them, with up to a few distinct samples (`sample` first, then `more_samples`)."""

    fingerprint: Fingerprint
    sample: str
    at: float
    count: int = 1
    more_samples: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Ingested:
    incident: Incident
    is_new: bool
    folded: int = 0  # errors of other fingerprints counted into this (storm) incident by this call
    folded_templates: tuple[str, ...] = ()  # the first few of their templates, most frequent first


class IncidentQueries(StoreBase):
    # --- cursors and ingestion ---------------------------------------------------------------------

    def get_cursor(self, source_id: str) -> str | None:
        row = self._query_one("SELECT cursor FROM cursors WHERE source_id = ?", (source_id,))
        return str(row["cursor"]) if row else None

    def ingest(
        self,
        source_id: str,
        cursor: str,
        observations: Sequence[Observation],
        *,
        max_samples: int,
        at: float,
        max_new: int | None = None,
        overflow: Fingerprint | None = None,
    ) -> list[Ingested]:
        """Count observations into open incidents and move the cursor, in one transaction: one write per
        observation, whatever its count (a flood arrives tallied by fingerprint).

        With `max_new`, at most that many incidents are opened; an observation that would open one more
        is counted into the open incident of `overflow` instead (opened if need be, not counted in
        `max_new`)."""
        touched: dict[int, bool] = {}
        opened = 0
        folded: dict[int, dict[str, int]] = {}
        with self._tx() as conn:
            for obs in observations:
                fp = obs.fingerprint
                row = conn.execute(
                    "SELECT id, count, samples FROM incidents WHERE service = ? AND fingerprint = ? AND is_open = 1",
                    (fp.service, fp.key),
                ).fetchone()
                if row is None and overflow is not None and max_new is not None and opened >= max_new:
                    template = fp.template[:200]
                    fp = overflow
                    row = conn.execute(
                        "SELECT id, count, samples FROM incidents"
                        " WHERE service = ? AND fingerprint = ? AND is_open = 1",
                        (fp.service, fp.key),
                    ).fetchone()
                    folded_here = folded.setdefault(-1 if row is None else int(row["id"]), {})
                    folded_here[template] = folded_here.get(template, 0) + obs.count
                elif row is None:
                    opened += 1
                offered = [s[:SAMPLE_CAP_CHARS] for s in (obs.sample, *obs.more_samples)]
                if row is None:
                    cur = conn.execute(
                        "INSERT INTO incidents (service, fingerprint, title, state, first_seen, last_seen, count,"
                        " samples, exception_type, frames) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            fp.service,
                            fp.key,
                            fp.template[:300],
                            IncidentState.OPEN.value,
                            obs.at,
                            obs.at,
                            obs.count,
                            json.dumps(_kept_samples([offered[0]], offered[1:], max_samples)),
                            fp.exception_type,
                            json.dumps([asdict(f) for f in fp.frames]),
                        ),
                    )
                    incident_id = int(cur.lastrowid or 0)
                    touched[incident_id] = True
                    if -1 in folded:
                        folded[incident_id] = folded.pop(-1)
                    append_audit(
                        conn,
                        at,
                        "healbot",
                        "incident_opened",
                        incident_id,
                        f"{fp.service}: {fp.template[:200]}",
                    )
                else:
                    incident_id = int(row["id"])
                    samples = _kept_samples(json.loads(row["samples"]), offered, max_samples)
                    conn.execute(
                        "UPDATE incidents SET count = count + ?, last_seen = ?, samples = ? WHERE id = ?",
                        (obs.count, obs.at, json.dumps(samples), incident_id),
                    )
                    touched.setdefault(incident_id, False)
            conn.execute(
                "INSERT INTO cursors (source_id, cursor, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT(source_id) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
                (source_id, cursor, at),
            )
            result = [
                Ingested(incident_row(conn, iid), is_new, *_folded(folded.get(iid, {})))
                for iid, is_new in touched.items()
            ]
        return result

    # --- incidents ---------------------------------------------------------------------------------

    def incident(self, incident_id: int) -> Incident:
        with self._lock:
            return incident_row(self._conn, incident_id)

    def incidents(
        self, *, open_only: bool = False, service: str | None = None, limit: int = 100
    ) -> list[Incident]:
        sql = "SELECT * FROM incidents WHERE 1=1"
        params: list[object] = []
        if open_only:
            sql += " AND is_open = 1"
        if service is not None:
            sql += " AND service = ?"
            params.append(service)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        return [_incident_from_row(r) for r in self._query(sql, params)]

    def incidents_in(self, states: Sequence[IncidentState]) -> list[Incident]:
        marks = ",".join("?" for _ in states)
        return [
            _incident_from_row(r)
            for r in self._query(
                f"SELECT * FROM incidents WHERE state IN ({marks}) ORDER BY id", [s.value for s in states]
            )
        ]

    def set_state(
        self,
        incident_id: int,
        state: IncidentState,
        *,
        at: float,
        actor: str = "healbot",
        detail: str = "",
        error: str | None = None,
    ) -> Incident:
        with self._tx() as conn:
            set_incident_state(conn, incident_id, state, at=at, actor=actor, detail=detail, error=error)
            return incident_row(conn, incident_id)

    def begin_diagnosis(self, incident_id: int, *, at: float, actor: str = "healbot") -> Incident:
        with self._tx() as conn:
            conn.execute(
                "UPDATE incidents SET last_diagnosed_at = ?, error = NULL WHERE id = ?", (at, incident_id)
            )
            set_incident_state(
                conn, incident_id, IncidentState.DIAGNOSING, at=at, actor=actor, detail="diagnosis started"
            )
            return incident_row(conn, incident_id)

    def last_diagnosis_at(self, service: str, fingerprint: str) -> float | None:
        row = self._query_one(
            "SELECT MAX(last_diagnosed_at) AS t FROM incidents WHERE service = ? AND fingerprint = ?",
            (service, fingerprint),
        )
        value = row["t"] if row else None
        return float(value) if value is not None else None

    def record_diagnosis(
        self, incident_id: int, stats: RunStats, *, summary: str, at: float, error: str | None = None
    ) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO diagnoses (incident_id, runner, summary, duration_s, cost_usd, turns, session_id, error,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    incident_id,
                    stats.runner,
                    summary,
                    stats.duration_s,
                    stats.cost_usd,
                    stats.turns,
                    stats.session_id,
                    error,
                    at,
                ),
            )
            if error is not None:
                set_incident_state(
                    conn,
                    incident_id,
                    IncidentState.DIAGNOSIS_FAILED,
                    at=at,
                    actor="healbot",
                    detail=error,
                    error=error,
                )
            else:
                append_audit(
                    conn,
                    at,
                    "healbot",
                    "diagnosed",
                    incident_id,
                    f"{stats.runner} {stats.duration_s:.1f}s {summary[:200]}",
                )

    def diagnoses(self, incident_id: int) -> list[tuple[RunStats, str, str | None]]:
        rows = self._query("SELECT * FROM diagnoses WHERE incident_id = ? ORDER BY id", (incident_id,))
        return [
            (
                RunStats(r["runner"], float(r["duration_s"]), r["cost_usd"], r["turns"], r["session_id"]),
                str(r["summary"]),
                r["error"],
            )
            for r in rows
        ]


def incident_row(conn: sqlite3.Connection, incident_id: int) -> Incident:
    row = conn.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
    if row is None:
        raise StoreError(f"incident #{incident_id} does not exist")
    return _incident_from_row(row)


def set_incident_state(
    conn: sqlite3.Connection,
    incident_id: int,
    state: IncidentState,
    *,
    at: float,
    actor: str,
    detail: str,
    error: str | None = None,
) -> None:
    conn.execute(
        "UPDATE incidents SET state = ?, is_open = ?, error = COALESCE(?, error) WHERE id = ?",
        (state.value, 1 if state.is_open else 0, error, incident_id),
    )
    append_audit(conn, at, actor, f"state:{state.value}", incident_id, detail or (error or ""))


def _incident_from_row(row: sqlite3.Row) -> Incident:
    return Incident(
        id=int(row["id"]),
        service=row["service"],
        fingerprint=row["fingerprint"],
        title=row["title"],
        state=IncidentState(row["state"]),
        first_seen=float(row["first_seen"]),
        last_seen=float(row["last_seen"]),
        count=int(row["count"]),
        samples=tuple(json.loads(row["samples"])),
        exception_type=row["exception_type"],
        frames=tuple(Frame(**f) for f in json.loads(row["frames"])),
        last_diagnosed_at=row["last_diagnosed_at"],
        error=row["error"],
    )


def _kept_samples(samples: list[str], offered: Sequence[str], max_samples: int) -> list[str]:
    """`samples` with the non-empty `offered` ones it lacks appended, up to `max_samples` in all."""
    for sample in offered:
        if sample and len(samples) < max_samples and sample not in samples:
            samples.append(sample)
    return samples


def _folded(templates: dict[str, int], shown: int = 5) -> tuple[int, tuple[str, ...]]:
    top = sorted(templates.items(), key=lambda item: -item[1])[:shown]
    return sum(templates.values()), tuple(template for template, _ in top)
