"""The status lines of each incident card, so an edit after a daemon restart still shows them.

Each line has a kind: a step, the verdict (never pruned, so the card can keep it pinned) or a refused
press (all refusals of a card are kept as one line with a count, so they cannot push the rest away)."""

from __future__ import annotations

from bot.models import StatusKind, StatusLine
from bot.render import shorten_middle
from bot.store.connection import StoreBase

PROGRESS_KEEP = 20  # status lines kept per card (besides its verdicts), the newest
PROGRESS_LINE_CAP = 500  # characters kept of one line, cut in the middle


class ProgressQueries(StoreBase):
    def add_progress(
        self, incident_id: int, line: str, *, at: float, kind: StatusKind = StatusKind.STEP
    ) -> str | None:
        """Append a line (scrubbed by the caller) to the card of the incident's latest proposal, keeping
        the newest PROGRESS_KEEP lines of that card and all its verdicts. A refusal replaces the card's
        earlier refusals and counts them. Returns the proposal token of that card, or None when the
        incident has no card yet (the line is not kept)."""
        kept = shorten_middle(line, PROGRESS_LINE_CAP)
        with self._tx() as conn:
            row = conn.execute(
                "SELECT id, token FROM proposals WHERE incident_id = ? ORDER BY id DESC LIMIT 1",
                (incident_id,),
            ).fetchone()
            if row is None:
                return None
            proposal_id = int(row["id"])
            repeats = 1
            if kind is StatusKind.REFUSAL:
                earlier = conn.execute(
                    "SELECT COALESCE(SUM(repeats), 0) FROM card_progress WHERE proposal_id = ? AND kind = ?",
                    (proposal_id, kind.value),
                ).fetchone()[0]
                repeats += int(earlier)
                conn.execute(
                    "DELETE FROM card_progress WHERE proposal_id = ? AND kind = ?", (proposal_id, kind.value)
                )
            conn.execute(
                "INSERT INTO card_progress (proposal_id, line, at, kind, repeats) VALUES (?, ?, ?, ?, ?)",
                (proposal_id, kept, at, kind.value, repeats),
            )
            conn.execute(
                "DELETE FROM card_progress WHERE proposal_id = ? AND kind != ? AND id <= (SELECT id FROM"
                " card_progress WHERE proposal_id = ? AND kind != ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (proposal_id, StatusKind.VERDICT.value, proposal_id, StatusKind.VERDICT.value, PROGRESS_KEEP),
            )
            return str(row["token"])

    def progress_lines(self, proposal_id: int) -> list[str]:
        """The kept lines of one card, oldest first."""
        return [line.text for line in self.status_lines(proposal_id)]

    def status_lines(self, proposal_id: int) -> list[StatusLine]:
        """The kept lines of one card with their kinds and counts, oldest first."""
        rows = self._query(
            "SELECT line, kind, repeats FROM card_progress WHERE proposal_id = ? ORDER BY id", (proposal_id,)
        )
        return [StatusLine(str(r["line"]), StatusKind(r["kind"]), int(r["repeats"])) for r in rows]

    def has_verdict(self, proposal_id: int) -> bool:
        row = self._query_one(
            "SELECT 1 FROM card_progress WHERE proposal_id = ? AND kind = ? LIMIT 1",
            (proposal_id, StatusKind.VERDICT.value),
        )
        return row is not None
