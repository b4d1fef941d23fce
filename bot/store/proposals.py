"""Proposals (the ranked candidates put to the operator, each with its exact diff) and the decisions on
them, accepted or refused."""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict

from bot.errors import StoreError
from bot.models import (
    Candidate,
    Decision,
    DecisionAction,
    DiffStats,
    Edit,
    Fix,
    FixKind,
    IncidentState,
    Proposal,
    ProposalStatus,
    Risk,
)
from bot.store.audit import append_audit
from bot.store.connection import StoreBase
from bot.store.incidents import set_incident_state


class ProposalQueries(StoreBase):
    def create_proposal(
        self,
        incident_id: int,
        *,
        base_commit: str,
        candidates: Sequence[Candidate],
        summary: str,
        at: float,
        expires_at: float,
    ) -> Proposal:
        token = secrets.token_urlsafe(12)
        with self._tx() as conn:
            conn.execute(
                "UPDATE proposals SET status = ? WHERE incident_id = ? AND status = ?",
                (ProposalStatus.SUPERSEDED.value, incident_id, ProposalStatus.PENDING.value),
            )
            cur = conn.execute(
                "INSERT INTO proposals (incident_id, token, base_commit, candidates, summary, created_at, expires_at, status)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    incident_id,
                    token,
                    base_commit,
                    json.dumps([candidate_to_json(c) for c in candidates]),
                    summary,
                    at,
                    expires_at,
                    ProposalStatus.PENDING.value,
                ),
            )
            set_incident_state(
                conn,
                incident_id,
                IncidentState.AWAITING_APPROVAL,
                at=at,
                actor="healbot",
                detail=f"{len(candidates)} candidate(s) at {base_commit[:12]}",
            )
            return _proposal_from_row(
                conn.execute("SELECT * FROM proposals WHERE id = ?", (cur.lastrowid,)).fetchone()
            )

    def proposal_by_token(self, token: str) -> Proposal | None:
        row = self._query_one("SELECT * FROM proposals WHERE token = ?", (token,))
        return _proposal_from_row(row) if row else None

    def proposal(self, proposal_id: int) -> Proposal:
        row = self._query_one("SELECT * FROM proposals WHERE id = ?", (proposal_id,))
        if row is None:
            raise StoreError(f"proposal #{proposal_id} does not exist")
        return _proposal_from_row(row)

    def latest_proposal(self, incident_id: int) -> Proposal | None:
        row = self._query_one(
            "SELECT * FROM proposals WHERE incident_id = ? ORDER BY id DESC LIMIT 1", (incident_id,)
        )
        return _proposal_from_row(row) if row else None

    def pending_proposals(self) -> list[Proposal]:
        rows = self._query(
            "SELECT * FROM proposals WHERE status = ? ORDER BY id", (ProposalStatus.PENDING.value,)
        )
        return [_proposal_from_row(r) for r in rows]

    def mark_reminded(self, proposal_id: int) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE proposals SET reminded = 1 WHERE id = ?", (proposal_id,))

    def was_reminded(self, proposal_id: int) -> bool:
        row = self._query_one("SELECT reminded FROM proposals WHERE id = ?", (proposal_id,))
        return bool(row and row["reminded"])

    def snooze_proposal(
        self,
        proposal: Proposal,
        decision: Decision,
        *,
        until: float,
        expires_at: float,
        message: str,
        at: float,
    ) -> Proposal | None:
        """A pending proposal snoozed: its expiry moves to `expires_at`, its reminder is due again (not
        before `until`); the decision is recorded and audited. None when it was no longer pending."""
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE proposals SET snoozed_until = ?, expires_at = ?, reminded = 0 WHERE id = ? AND status = ?",
                (until, expires_at, proposal.id, ProposalStatus.PENDING.value),
            )
            if cur.rowcount != 1:
                return None
            _insert_decision(conn, proposal.id, decision, accepted=True, message=message, at=at)
            append_audit(conn, at, decision.actor, "proposal:snoozed", proposal.incident_id, message)
            return _proposal_from_row(
                conn.execute("SELECT * FROM proposals WHERE id = ?", (proposal.id,)).fetchone()
            )

    def close_proposal(
        self,
        proposal: Proposal,
        status: ProposalStatus,
        decision: Decision | None,
        *,
        incident_state: IncidentState | None,
        message: str,
        at: float,
    ) -> bool:
        """Move a PENDING proposal to `status` (and its incident), recording the decision. False if it
        was no longer pending: somebody else acted first."""
        with self._tx() as conn:
            return close_pending(
                conn, proposal, status, decision, incident_state=incident_state, message=message, at=at
            )

    def record_refused_decision(
        self, proposal: Proposal | None, decision: Decision, message: str, *, at: float
    ) -> None:
        with self._tx() as conn:
            if proposal is not None:
                _insert_decision(conn, proposal.id, decision, accepted=False, message=message, at=at)
            append_audit(
                conn,
                at,
                decision.actor,
                "decision_refused",
                proposal.incident_id if proposal else None,
                message,
            )

    def decider(self, proposal_id: int) -> tuple[str, str] | None:
        """Who closed this proposal and how (actor, action), if a person did."""
        row = self._query_one(
            "SELECT actor, action FROM decisions WHERE proposal_id = ? AND accepted = 1 AND action != ?"
            " ORDER BY id LIMIT 1",
            (proposal_id, DecisionAction.SNOOZE.value),
        )
        return (str(row["actor"]), str(row["action"])) if row else None


def close_pending(
    conn: sqlite3.Connection,
    proposal: Proposal,
    status: ProposalStatus,
    decision: Decision | None,
    *,
    incident_state: IncidentState | None,
    message: str,
    at: float,
) -> bool:
    """Inside a transaction: close a PENDING proposal; False (nothing written) if it was not pending."""
    cur = conn.execute(
        "UPDATE proposals SET status = ? WHERE id = ? AND status = ?",
        (status.value, proposal.id, ProposalStatus.PENDING.value),
    )
    if cur.rowcount != 1:
        return False
    actor = decision.actor if decision else "healbot"
    if decision is not None:
        _insert_decision(conn, proposal.id, decision, accepted=True, message=message, at=at)
    append_audit(conn, at, actor, f"proposal:{status.value}", proposal.incident_id, message)
    if incident_state is not None:
        set_incident_state(conn, proposal.incident_id, incident_state, at=at, actor=actor, detail=message)
    return True


def _insert_decision(
    conn: sqlite3.Connection, proposal_id: int, decision: Decision, *, accepted: bool, message: str, at: float
) -> None:
    conn.execute(
        "INSERT INTO decisions (proposal_id, actor, action, rank, at, accepted, message)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (proposal_id, decision.actor, decision.action.value, decision.rank, at, int(accepted), message),
    )


def candidate_to_json(c: Candidate) -> dict[str, object]:
    return {
        "fix": {
            "rank": c.fix.rank,
            "title": c.fix.title,
            "rationale": c.fix.rationale,
            "risk": c.fix.risk.value,
            "kind": c.fix.kind.value,
            "edits": [asdict(e) for e in c.fix.edits],
            "runbook": c.fix.runbook,
            "commit": c.fix.commit,
        },
        "diff": c.diff,
        "digest": c.digest,
        "stats": asdict(c.stats),
        "check_passed": c.check_passed,
        "check_output": c.check_output,
    }


def candidate_from_json(d: dict[str, object]) -> Candidate:
    f = d["fix"]
    assert isinstance(f, dict)
    stats = d["stats"]
    assert isinstance(stats, dict)
    fix = Fix(
        rank=int(f["rank"]),
        title=str(f["title"]),
        rationale=str(f["rationale"]),
        risk=Risk(f["risk"]),
        kind=FixKind(f["kind"]),
        edits=tuple(Edit(**e) for e in f["edits"]),
        runbook=f["runbook"],
        commit=f["commit"],
    )
    check_passed = d["check_passed"]
    return Candidate(
        fix=fix,
        diff=str(d["diff"]),
        digest=str(d["digest"]),
        stats=DiffStats(**stats),
        check_passed=bool(check_passed) if check_passed is not None else None,
        check_output=str(d["check_output"]),
    )


def _proposal_from_row(row: sqlite3.Row) -> Proposal:
    return Proposal(
        id=int(row["id"]),
        incident_id=int(row["incident_id"]),
        token=row["token"],
        base_commit=row["base_commit"],
        candidates=tuple(candidate_from_json(c) for c in json.loads(row["candidates"])),
        created_at=float(row["created_at"]),
        expires_at=float(row["expires_at"]),
        status=ProposalStatus(row["status"]),
        summary=row["summary"],
        snoozed_until=None if row["snoozed_until"] is None else float(row["snoozed_until"]),
    )
