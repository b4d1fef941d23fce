"""Changes (an approved candidate being applied, then kept or reverted), the health measured before
each, and the verdicts after."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict

from bot.errors import StoreError
from bot.models import (
    Candidate,
    Change,
    ChangeStatus,
    Decision,
    FixKind,
    HealthSnapshot,
    IncidentState,
    Outcome,
    Proposal,
    ProposalStatus,
    Verdict,
)
from bot.store.audit import append_audit
from bot.store.connection import StoreBase
from bot.store.incidents import set_incident_state
from bot.store.proposals import candidate_from_json, close_pending


class ChangeQueries(StoreBase):
    def approve_proposal(
        self,
        proposal: Proposal,
        candidate: Candidate,
        decision: Decision,
        *,
        service: str,
        message: str,
        at: float,
    ) -> Change | None:
        """One decision, one transaction: the proposal closed as approved, its incident APPLYING and the
        change to apply recorded together. None (nothing written) when the proposal was no longer pending."""
        with self._tx() as conn:
            if not close_pending(
                conn,
                proposal,
                ProposalStatus.APPROVED,
                decision,
                incident_state=IncidentState.APPLYING,
                message=message,
                at=at,
            ):
                return None
            return _insert_change(
                conn, proposal, candidate, service=service, approved_by=decision.actor, at=at
            )

    def create_change(
        self, proposal: Proposal, candidate: Candidate, *, service: str, approved_by: str, at: float
    ) -> Change:
        with self._tx() as conn:
            return _insert_change(conn, proposal, candidate, service=service, approved_by=approved_by, at=at)

    def plan_commit(self, change_id: int, sha: str | None, *, revert: bool, at: float) -> None:
        """The commit a change is about to land (its fix, or with `revert` its revert), stored before the
        repo is touched: after a crash, recovery finishes exactly this step. None: the landing backed out."""
        column = "planned_revert" if revert else "planned_commit"
        with self._tx() as conn:
            conn.execute(
                f"UPDATE changes SET {column} = ?, updated_at = ? WHERE id = ?", (sha, at, change_id)
            )
            row = conn.execute("SELECT incident_id FROM changes WHERE id = ?", (change_id,)).fetchone()
            if row is None:
                raise StoreError(f"change #{change_id} does not exist")
            what = "revert" if revert else "commit"
            event = f"change:{what}_planned" if sha else f"change:{what}_backed_out"
            append_audit(conn, at, "healbot", event, int(row["incident_id"]), sha or "")

    def planned_commits(self, change_id: int) -> tuple[str | None, str | None]:
        """(planned fix commit, planned revert commit) of a change, each None until planned."""
        row = self._query_one("SELECT planned_commit, planned_revert FROM changes WHERE id = ?", (change_id,))
        if row is None:
            raise StoreError(f"change #{change_id} does not exist")
        return row["planned_commit"], row["planned_revert"]

    def update_change(
        self,
        change_id: int,
        status: ChangeStatus,
        *,
        at: float,
        commit: str | None = None,
        revert_commit: str | None = None,
        incident_state: IncidentState | None = None,
        detail: str = "",
    ) -> Change:
        with self._tx() as conn:
            conn.execute(
                "UPDATE changes SET status = ?, commit_sha = COALESCE(?, commit_sha),"
                " revert_commit = COALESCE(?, revert_commit), updated_at = ? WHERE id = ?",
                (status.value, commit, revert_commit, at, change_id),
            )
            change = _change_row(conn, change_id)
            append_audit(
                conn, at, "healbot", f"change:{status.value}", change.incident_id, detail or (commit or "")
            )
            if incident_state is not None:
                set_incident_state(
                    conn, change.incident_id, incident_state, at=at, actor="healbot", detail=detail
                )
            return change

    def unlanded_reverts(self) -> list[Change]:
        """Changes whose revert was planned (its commit id stored) but not recorded as made."""
        rows = self._query(
            "SELECT * FROM changes WHERE planned_revert IS NOT NULL AND revert_commit IS NULL"
            " AND status != ? ORDER BY id",
            (ChangeStatus.REVERTED.value,),
        )
        return [_change_from_row(r) for r in rows]

    def change(self, change_id: int) -> Change | None:
        row = self._query_one("SELECT * FROM changes WHERE id = ?", (change_id,))
        return _change_from_row(row) if row else None

    def change_of_proposal(self, proposal_id: int) -> Change | None:
        """The change an approval of this proposal made, if any."""
        row = self._query_one(
            "SELECT * FROM changes WHERE proposal_id = ? ORDER BY id DESC LIMIT 1", (proposal_id,)
        )
        return _change_from_row(row) if row else None

    def change_digest(self, change_id: int) -> str:
        row = self._query_one("SELECT digest FROM changes WHERE id = ?", (change_id,))
        if row is None:
            raise StoreError(f"change #{change_id} does not exist")
        return str(row["digest"])

    def changes(
        self, *, service: str | None = None, statuses: Sequence[ChangeStatus] = (), limit: int = 20
    ) -> list[Change]:
        sql = "SELECT * FROM changes WHERE 1=1"
        params: list[object] = []
        if service is not None:
            sql += " AND service = ?"
            params.append(service)
        if statuses:
            sql += f" AND status IN ({','.join('?' for _ in statuses)})"
            params.extend(s.value for s in statuses)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        return [_change_from_row(r) for r in self._query(sql, params)]

    def record_outcome(self, outcome: Outcome, *, at: float) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO outcomes (change_id, before, after, verdict, reasons, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    outcome.change_id,
                    json.dumps(_snapshot_to_json(outcome.before)),
                    json.dumps(_snapshot_to_json(outcome.after)),
                    outcome.verdict.value,
                    json.dumps(list(outcome.reasons)),
                    at,
                ),
            )
            row = conn.execute(
                "SELECT incident_id FROM changes WHERE id = ?", (outcome.change_id,)
            ).fetchone()
            append_audit(
                conn,
                at,
                "healbot",
                f"verdict:{outcome.verdict.value}",
                row["incident_id"] if row else None,
                "; ".join(outcome.reasons),
            )

    def save_baseline(self, change_id: int, before: HealthSnapshot) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO baselines (change_id, snapshot) VALUES (?, ?)",
                (change_id, json.dumps(_snapshot_to_json(before))),
            )

    def baseline(self, change_id: int) -> HealthSnapshot | None:
        row = self._query_one("SELECT snapshot FROM baselines WHERE change_id = ?", (change_id,))
        return _snapshot_from_json(json.loads(row["snapshot"])) if row else None

    def changes_since(
        self, since: float, *, service: str | None = None, fingerprint: str | None = None
    ) -> list[Change]:
        """Changes created at or after `since` (any status), optionally of one service or fingerprint."""
        sql = "SELECT c.* FROM changes c JOIN incidents i ON i.id = c.incident_id WHERE c.created_at >= ?"
        params: list[object] = [since]
        if service is not None:
            sql += " AND c.service = ?"
            params.append(service)
        if fingerprint is not None:
            sql += " AND i.fingerprint = ?"
            params.append(fingerprint)
        return [_change_from_row(r) for r in self._query(sql + " ORDER BY c.id", params)]

    def reverted_candidates(self, service: str, fingerprint: str) -> list[Candidate]:
        """The candidates whose changes were reverted for this fingerprint: never to be proposed again."""
        rows = self._query(
            "SELECT c.rank, p.candidates FROM changes c JOIN incidents i ON i.id = c.incident_id"
            " JOIN proposals p ON p.id = c.proposal_id"
            " WHERE i.service = ? AND i.fingerprint = ? AND c.status = ? ORDER BY c.id",
            (service, fingerprint, ChangeStatus.REVERTED.value),
        )
        found: list[Candidate] = []
        for r in rows:
            for item in json.loads(r["candidates"]):
                candidate = candidate_from_json(item)
                if candidate.fix.rank == r["rank"]:
                    found.append(candidate)
        return found

    def outcomes(self, change_id: int) -> list[Outcome]:
        rows = self._query("SELECT * FROM outcomes WHERE change_id = ? ORDER BY id", (change_id,))
        return [
            Outcome(
                change_id,
                _snapshot_from_json(json.loads(r["before"])),
                _snapshot_from_json(json.loads(r["after"])),
                Verdict(r["verdict"]),
                tuple(json.loads(r["reasons"])),
            )
            for r in rows
        ]

    def past_outcomes(self, service: str, fingerprint: str, limit: int = 5) -> list[str]:
        """One line per earlier change for this fingerprint, for the diagnosis prompt."""
        rows = self._query(
            "SELECT c.kind, c.status, c.commit_sha, c.created_at, o.verdict, o.reasons FROM changes c"
            " JOIN incidents i ON i.id = c.incident_id LEFT JOIN outcomes o ON o.change_id = c.id"
            " WHERE i.service = ? AND i.fingerprint = ? ORDER BY c.id DESC LIMIT ?",
            (service, fingerprint, limit),
        )
        lines = []
        for r in rows:
            reasons = "; ".join(json.loads(r["reasons"])) if r["reasons"] else ""
            sha = (r["commit_sha"] or "")[:10]
            lines.append(
                f"{r['kind']} {sha} → {r['status']} ({r['verdict'] or 'no verdict'}: {reasons})".strip()
            )
        return lines


def _insert_change(
    conn: sqlite3.Connection,
    proposal: Proposal,
    candidate: Candidate,
    *,
    service: str,
    approved_by: str,
    at: float,
) -> Change:
    cur = conn.execute(
        "INSERT INTO changes (incident_id, proposal_id, rank, service, kind, digest, status, approved_by,"
        " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            proposal.incident_id,
            proposal.id,
            candidate.fix.rank,
            service,
            candidate.fix.kind.value,
            candidate.digest,
            ChangeStatus.APPLYING.value,
            approved_by,
            at,
            at,
        ),
    )
    append_audit(
        conn,
        at,
        approved_by,
        "change:applying",
        proposal.incident_id,
        f"#{candidate.fix.rank} {candidate.fix.title[:150]}",
    )
    return _change_row(conn, int(cur.lastrowid or 0))


def _change_row(conn: sqlite3.Connection, change_id: int) -> Change:
    return _change_from_row(conn.execute("SELECT * FROM changes WHERE id = ?", (change_id,)).fetchone())


def _change_from_row(row: sqlite3.Row) -> Change:
    return Change(
        id=int(row["id"]),
        incident_id=int(row["incident_id"]),
        proposal_id=int(row["proposal_id"]),
        rank=int(row["rank"]),
        service=row["service"],
        kind=FixKind(row["kind"]),
        status=ChangeStatus(row["status"]),
        commit=row["commit_sha"],
        revert_commit=row["revert_commit"],
        approved_by=row["approved_by"],
        created_at=float(row["created_at"]),
    )


def _snapshot_to_json(s: HealthSnapshot) -> dict[str, object]:
    data = asdict(s)
    data["errors_by_fingerprint"] = [list(p) for p in s.errors_by_fingerprint]
    return data


def _snapshot_from_json(d: dict[str, object]) -> HealthSnapshot:
    pairs = d.pop("errors_by_fingerprint", [])
    assert isinstance(pairs, list)
    return HealthSnapshot(**d, errors_by_fingerprint=tuple((str(k), int(v)) for k, v in pairs))  # type: ignore[arg-type]
