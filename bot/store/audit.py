"""The audit log: append-only (the schema's triggers refuse UPDATE and DELETE on it)."""

from __future__ import annotations

import sqlite3

from bot.models import AuditEvent
from bot.store.connection import StoreBase


def append_audit(
    conn: sqlite3.Connection, at: float, actor: str, event: str, incident_id: int | None, detail: str
) -> None:
    """One audit row, inside the caller's transaction."""
    conn.execute(
        "INSERT INTO audit (at, actor, event, incident_id, detail) VALUES (?, ?, ?, ?, ?)",
        (at, actor, event, incident_id, detail),
    )


class AuditQueries(StoreBase):
    def audit(
        self, actor: str, event: str, detail: str, *, at: float, incident_id: int | None = None
    ) -> None:
        with self._tx() as conn:
            append_audit(conn, at, actor, event, incident_id, detail)

    def audit_times(self, event: str, *, since: float) -> list[float]:
        """When `event` was audited at or after `since`, oldest first (restart counts for the breakers)."""
        rows = self._query("SELECT at FROM audit WHERE event = ? AND at >= ? ORDER BY id", (event, since))
        return [float(r["at"]) for r in rows]

    def audit_log(self, *, incident_id: int | None = None, limit: int = 200) -> list[AuditEvent]:
        if incident_id is None:
            rows = self._query("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._query(
                "SELECT * FROM audit WHERE incident_id = ? ORDER BY id DESC LIMIT ?", (incident_id, limit)
            )
        return [
            AuditEvent(float(r["at"]), r["actor"], r["event"], r["incident_id"], r["detail"])
            for r in reversed(rows)
        ]
