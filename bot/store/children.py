"""The claude processes running now: one row from before a child can spend anything until it has ended, so
the next start of the daemon can kill what a killed daemon left behind (bot/runner/children.py decides)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from bot.store.audit import append_audit
from bot.store.connection import StoreBase


@dataclass(frozen=True, slots=True)
class ClaudeChild:
    """A started claude: its pid, its start time in clock ticks after boot (/proc/<pid>/stat field 22) and
    that boot's id, so a reused pid is never taken for it, the argv it was started with, and the healbot
    process that started it (its owner: pid and start time)."""

    id: int
    pid: int
    start_ticks: int
    boot_id: str
    argv: tuple[str, ...]
    owner_pid: int
    owner_start_ticks: int
    incident_id: int | None
    session_id: str | None
    started_at: float


class ChildQueries(StoreBase):
    def add_claude_child(
        self,
        *,
        pid: int,
        start_ticks: int,
        boot_id: str,
        argv: tuple[str, ...],
        owner_pid: int,
        owner_start_ticks: int,
        incident_id: int | None,
        session_id: str | None,
        at: float,
    ) -> int | None:
        """The new row's id, or None when a row for `incident_id` exists already (one claude per incident)."""
        with self._tx() as conn:
            cursor = conn.execute(
                "INSERT INTO claude_children (pid, start_ticks, boot_id, argv, owner_pid, owner_start_ticks,"
                " incident_id, session_id, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (
                    pid,
                    start_ticks,
                    boot_id,
                    json.dumps(list(argv)),
                    owner_pid,
                    owner_start_ticks,
                    incident_id,
                    session_id,
                    at,
                ),
            )
            return int(cursor.lastrowid) if cursor.rowcount == 1 and cursor.lastrowid else None

    def claude_children(self, *, incident_id: int | None = None) -> list[ClaudeChild]:
        if incident_id is None:
            rows = self._query("SELECT * FROM claude_children ORDER BY id")
        else:
            rows = self._query(
                "SELECT * FROM claude_children WHERE incident_id = ? ORDER BY id", (incident_id,)
            )
        return [_child(r) for r in rows]

    def remove_claude_child(self, child_id: int) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM claude_children WHERE id = ?", (child_id,))

    def settle_left_over_child(self, child: ClaudeChild, outcome: str, *, at: float) -> None:
        """Forget a row the previous daemon left, with one audit line saying what became of its process."""
        with self._tx() as conn:
            conn.execute("DELETE FROM claude_children WHERE id = ?", (child.id,))
            detail = f"pid {child.pid}, session {child.session_id or 'unknown'}: {outcome}"
            append_audit(conn, at, "healbot", "claude_run_interrupted", child.incident_id, detail)


def _child(row: sqlite3.Row) -> ClaudeChild:
    return ClaudeChild(
        id=int(row["id"]),
        pid=int(row["pid"]),
        start_ticks=int(row["start_ticks"]),
        boot_id=str(row["boot_id"]),
        argv=tuple(str(a) for a in json.loads(row["argv"])),
        owner_pid=int(row["owner_pid"]),
        owner_start_ticks=int(row["owner_start_ticks"]),
        incident_id=None if row["incident_id"] is None else int(row["incident_id"]),
        session_id=row["session_id"],
        started_at=float(row["started_at"]),
    )
