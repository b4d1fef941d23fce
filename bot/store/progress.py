"""The progress lines of each incident card, so an edit after a daemon restart still shows them."""

from __future__ import annotations

from bot.store.connection import StoreBase

PROGRESS_KEEP = 20  # progress lines kept per card, the newest
PROGRESS_LINE_CAP = 500  # characters kept of one progress line


class ProgressQueries(StoreBase):
    def add_progress(self, incident_id: int, line: str, *, at: float) -> str | None:
        """Append a line (scrubbed by the caller) to the card of the incident's latest proposal, keeping
        the newest PROGRESS_KEEP lines of that card, each cut to PROGRESS_LINE_CAP characters. Returns the
        proposal token of that card, or None when the incident has no card yet (the line is not kept)."""
        kept = line if len(line) <= PROGRESS_LINE_CAP else line[: PROGRESS_LINE_CAP - 1] + "…"
        with self._tx() as conn:
            row = conn.execute(
                "SELECT id, token FROM proposals WHERE incident_id = ? ORDER BY id DESC LIMIT 1",
                (incident_id,),
            ).fetchone()
            if row is None:
                return None
            proposal_id = int(row["id"])
            conn.execute(
                "INSERT INTO card_progress (proposal_id, line, at) VALUES (?, ?, ?)", (proposal_id, kept, at)
            )
            conn.execute(
                "DELETE FROM card_progress WHERE proposal_id = ? AND id <= (SELECT id FROM card_progress"
                " WHERE proposal_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (proposal_id, proposal_id, PROGRESS_KEEP),
            )
            return str(row["token"])

    def progress_lines(self, proposal_id: int) -> list[str]:
        """The kept progress lines of one card, oldest first."""
        rows = self._query("SELECT line FROM card_progress WHERE proposal_id = ? ORDER BY id", (proposal_id,))
        return [str(r["line"]) for r in rows]
