"""Retries of a failed diagnosis, so a restart of the daemon neither forgets nor repeats them."""

from __future__ import annotations

from bot.store.audit import append_audit
from bot.store.connection import StoreBase


class RetryQueries(StoreBase):
    def retry_attempts(self, incident_id: int) -> int:
        row = self._query_one("SELECT attempts FROM diagnosis_retries WHERE incident_id = ?", (incident_id,))
        return int(row["attempts"]) if row else 0

    def schedule_retry(self, incident_id: int, attempts: int, due_at: float, *, at: float) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO diagnosis_retries (incident_id, attempts, due_at) VALUES (?, ?, ?)"
                " ON CONFLICT(incident_id) DO UPDATE SET attempts = excluded.attempts, due_at = excluded.due_at",
                (incident_id, attempts, due_at),
            )
            append_audit(
                conn,
                at,
                "healbot",
                "diagnosis_retry_scheduled",
                incident_id,
                f"attempt {attempts} due at {due_at:.0f}",
            )

    def take_due_retries(self, now: float) -> list[int]:
        """Incidents whose retry is due, oldest first; each is taken once (its attempt count is kept)."""
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT incident_id FROM diagnosis_retries WHERE due_at IS NOT NULL AND due_at <= ?"
                " ORDER BY due_at, incident_id",
                (now,),
            ).fetchall()
            due = [int(r["incident_id"]) for r in rows]
            conn.executemany(
                "UPDATE diagnosis_retries SET due_at = NULL WHERE incident_id = ?", [(i,) for i in due]
            )
        return due

    def clear_retries(self, incident_id: int) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM diagnosis_retries WHERE incident_id = ?", (incident_id,))
