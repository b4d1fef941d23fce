"""SQLite state: the only module that speaks SQL. WAL mode, versioned migrations, one transaction per change.

Everything the bot must not forget lives here: cursors, incidents, diagnoses, proposals, decisions,
changes, outcomes, settings, template clusters, the progress lines of the cards and an append-only audit
log (UPDATE and DELETE on it are refused by triggers).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from bot.clusters import SavedCluster
from bot.errors import StoreError
from bot.models import (
    AuditEvent,
    Candidate,
    Change,
    ChangeStatus,
    Decision,
    DiffStats,
    Edit,
    Fingerprint,
    Fix,
    FixKind,
    Frame,
    HealthSnapshot,
    Incident,
    IncidentState,
    Outcome,
    Proposal,
    ProposalStatus,
    Risk,
    RunStats,
    Verdict,
)

log = logging.getLogger(__name__)

SAMPLE_CAP_CHARS = 8192
PROGRESS_KEEP = 20  # progress lines kept per card, the newest
PROGRESS_LINE_CAP = 500  # characters kept of one progress line
CLUSTER_KEEP_DAYS = 30  # a template cluster no line matched for this long is deleted at daemon start

MIGRATIONS: tuple[str, ...] = (
    # 1: the initial schema
    """
    CREATE TABLE cursors (
        source_id TEXT PRIMARY KEY,
        cursor TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE incidents (
        id INTEGER PRIMARY KEY,
        service TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        title TEXT NOT NULL,
        state TEXT NOT NULL,
        is_open INTEGER NOT NULL DEFAULT 1,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        count INTEGER NOT NULL,
        samples TEXT NOT NULL,
        exception_type TEXT,
        frames TEXT NOT NULL DEFAULT '[]',
        last_diagnosed_at REAL,
        error TEXT
    );
    CREATE UNIQUE INDEX incidents_one_open ON incidents(service, fingerprint) WHERE is_open = 1;
    CREATE TABLE diagnoses (
        id INTEGER PRIMARY KEY,
        incident_id INTEGER NOT NULL REFERENCES incidents(id),
        runner TEXT NOT NULL,
        summary TEXT NOT NULL,
        duration_s REAL NOT NULL,
        cost_usd REAL,
        turns INTEGER,
        session_id TEXT,
        error TEXT,
        created_at REAL NOT NULL
    );
    CREATE TABLE proposals (
        id INTEGER PRIMARY KEY,
        incident_id INTEGER NOT NULL REFERENCES incidents(id),
        token TEXT NOT NULL UNIQUE,
        base_commit TEXT NOT NULL,
        candidates TEXT NOT NULL,
        summary TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        status TEXT NOT NULL,
        reminded INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE decisions (
        id INTEGER PRIMARY KEY,
        proposal_id INTEGER NOT NULL REFERENCES proposals(id),
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        rank INTEGER,
        at REAL NOT NULL,
        accepted INTEGER NOT NULL,
        message TEXT NOT NULL
    );
    CREATE TABLE changes (
        id INTEGER PRIMARY KEY,
        incident_id INTEGER NOT NULL REFERENCES incidents(id),
        proposal_id INTEGER NOT NULL REFERENCES proposals(id),
        rank INTEGER NOT NULL,
        service TEXT NOT NULL,
        kind TEXT NOT NULL,
        digest TEXT NOT NULL,
        status TEXT NOT NULL,
        commit_sha TEXT,
        revert_commit TEXT,
        approved_by TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE outcomes (
        id INTEGER PRIMARY KEY,
        change_id INTEGER NOT NULL REFERENCES changes(id),
        before TEXT NOT NULL,
        after TEXT NOT NULL,
        verdict TEXT NOT NULL,
        reasons TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        event TEXT NOT NULL,
        incident_id INTEGER,
        detail TEXT NOT NULL
    );
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    """,
    # 2: the outbox of chat messages, so cards survive a chat outage and a daemon restart
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        chat_id TEXT NOT NULL,
        key TEXT NOT NULL,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        incident_id INTEGER,
        created_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        sent_at REAL,
        message_id INTEGER
    );
    CREATE UNIQUE INDEX outbox_key ON outbox(chat_id, key);
    """,
    # 3: the health measured before a change, so a verification interrupted by a restart can run again
    """
    CREATE TABLE baselines (
        change_id INTEGER PRIMARY KEY REFERENCES changes(id),
        snapshot TEXT NOT NULL
    );
    """,
    # 4: retries of a failed diagnosis, so a restart of the daemon does not forget or repeat them
    """
    CREATE TABLE diagnosis_retries (
        incident_id INTEGER PRIMARY KEY REFERENCES incidents(id),
        attempts INTEGER NOT NULL,
        due_at REAL
    );
    """,
    # 5: the template clusters of plain-text errors, so their incident keys survive a daemon restart
    """
    CREATE TABLE template_clusters (
        id INTEGER PRIMARY KEY,
        service TEXT NOT NULL,
        is_error INTEGER NOT NULL,
        key TEXT NOT NULL,
        template TEXT NOT NULL,
        learned TEXT NOT NULL DEFAULT '[]',
        size INTEGER NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE UNIQUE INDEX template_clusters_key ON template_clusters(service, is_error, key);
    """,
    # 6: the progress lines of each incident card, so an edit after a daemon restart still shows them
    """
    CREATE TABLE card_progress (
        id INTEGER PRIMARY KEY,
        proposal_id INTEGER NOT NULL REFERENCES proposals(id),
        line TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX card_progress_card ON card_progress(proposal_id, id);
    """,
)

BACKUP_DIR = "backups"
BACKUP_KEEP = 7
_BACKUP_NAME = re.compile(r"^healbot-(\d{4}-\d{2}-\d{2})\.db$")


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A message for a chat: `key` makes it idempotent (one card per proposal per chat)."""

    id: int
    chat_id: str
    key: str
    kind: str
    payload: str  # JSON, built by the channel
    incident_id: int | None
    created_at: float
    attempts: int
    sent_at: float | None
    message_id: int | None


@dataclass(frozen=True, slots=True)
class Observation:
    """One error record seen by a source, ready to be counted into an incident."""

    fingerprint: Fingerprint
    sample: str
    at: float


@dataclass(frozen=True, slots=True)
class Ingested:
    incident: Incident
    is_new: bool


class Store:
    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self._conn = conn
        self._lock = threading.RLock()
        self.path = path

    # --- lifecycle ---------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, *, busy_timeout_s: float = 10.0) -> Store:
        """Open (creating) the database, check its integrity, migrate. A corrupt or locked database is a
        StoreError that says what to do and names the last good backup."""
        target = str(path)
        if target != ":memory:":
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(
                target, check_same_thread=False, isolation_level=None, timeout=busy_timeout_s
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            found = [str(r[0]) for r in conn.execute("PRAGMA quick_check").fetchall()]
            conn.execute("BEGIN IMMEDIATE")  # can we write at all? a held lock is reported now, not later
            conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise StoreError(_open_problem(target, str(exc))) from exc
        if found != ["ok"]:
            conn.close()
            raise StoreError(_open_problem(target, "integrity check failed: " + "; ".join(found[:3])))
        store = cls(conn, target)
        try:
            store._migrate()
        except StoreError as exc:
            conn.close()
            if "locked" in str(exc):
                raise StoreError(_open_problem(target, "database is locked")) from exc
            raise
        return store

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def backup_if_due(self, now: float) -> Path | None:
        """The daily online backup: `backups/healbot-YYYY-MM-DD.db` next to the database, checked after
        it is written, the newest BACKUP_KEEP kept. Returns the new backup, or None when today's exists."""
        if self.path == ":memory:":
            return None
        directory = Path(self.path).parent / BACKUP_DIR
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        target = directory / f"healbot-{day}.db"
        if target.exists():
            return None
        directory.mkdir(parents=True, exist_ok=True)
        self.backup(target)
        problem = _file_integrity_problem(target)
        if problem is not None:
            target.unlink(missing_ok=True)
            raise StoreError(f"the backup {target} failed its integrity check ({problem}); it was removed")
        for old in backups(self.path)[BACKUP_KEEP:]:
            old.unlink(missing_ok=True)
        return target

    def integrity_problem(self) -> str | None:
        """`PRAGMA integrity_check`: None when the database is sound, else what SQLite found."""
        try:
            rows = self._query("PRAGMA integrity_check")
        except sqlite3.Error as exc:
            return str(exc)
        found = [str(r[0]) for r in rows]
        return None if found == ["ok"] else "; ".join(found[:5])

    def backup(self, target: str | Path) -> Path:
        """An online copy through sqlite3's backup API (consistent while the daemon writes), then renamed
        into place so a crash mid-backup never leaves a half-written backup under the final name."""
        final = Path(target)
        partial = final.with_name(final.name + ".partial")
        try:
            partial.unlink(missing_ok=True)
            with self._lock:
                copy = sqlite3.connect(str(partial))
                try:
                    self._conn.backup(copy)
                finally:
                    copy.close()
            partial.replace(final)
        except (sqlite3.Error, OSError) as exc:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            raise StoreError(f"cannot back up the state database to {final}: {exc}") from exc
        return final

    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        current = self.schema_version()
        if current > len(MIGRATIONS):
            raise StoreError(
                f"the state database {self.path} is schema version {current}, newer than this healbot "
                f"({len(MIGRATIONS)}); upgrade healbot"
            )
        for version in range(current + 1, len(MIGRATIONS) + 1):
            with self._tx() as conn:
                if self.schema_version() >= version:
                    continue  # another process (the daemon, a CLI command) migrated it meanwhile
                for statement in _split_sql(MIGRATIONS[version - 1]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version}")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot start a transaction on {self.path}: {exc}") from exc
            try:
                yield self._conn
            except sqlite3.OperationalError as exc:
                self._rollback()
                raise StoreError(_write_problem(self.path, exc)) from exc
            except BaseException:
                self._rollback()
                raise
            else:
                try:
                    self._conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._rollback()
                    raise StoreError(f"cannot commit to {self.path}: {exc}") from exc

    def _rollback(self) -> None:
        # SQLite may already have rolled back on its own (a full disk, an I/O error)
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._conn.execute(sql, params).fetchall())

    @staticmethod
    def _audit(
        conn: sqlite3.Connection, at: float, actor: str, event: str, incident_id: int | None, detail: str
    ) -> None:
        conn.execute(
            "INSERT INTO audit (at, actor, event, incident_id, detail) VALUES (?, ?, ?, ?, ?)",
            (at, actor, event, incident_id, detail),
        )

    # --- cursors and ingestion ---------------------------------------------------------------------

    def get_cursor(self, source_id: str) -> str | None:
        rows = self._query("SELECT cursor FROM cursors WHERE source_id = ?", (source_id,))
        return str(rows[0]["cursor"]) if rows else None

    def ingest(
        self, source_id: str, cursor: str, observations: Sequence[Observation], *, max_samples: int, at: float
    ) -> list[Ingested]:
        """Count observations into open incidents and move the cursor, in one transaction."""
        touched: dict[int, bool] = {}
        with self._tx() as conn:
            for obs in observations:
                fp = obs.fingerprint
                row = conn.execute(
                    "SELECT id, count, samples FROM incidents WHERE service = ? AND fingerprint = ? AND is_open = 1",
                    (fp.service, fp.key),
                ).fetchone()
                sample = obs.sample[:SAMPLE_CAP_CHARS]
                if row is None:
                    cur = conn.execute(
                        "INSERT INTO incidents (service, fingerprint, title, state, first_seen, last_seen, count,"
                        " samples, exception_type, frames) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?)",
                        (
                            fp.service,
                            fp.key,
                            fp.template[:300],
                            IncidentState.OPEN.value,
                            obs.at,
                            obs.at,
                            json.dumps([sample]),
                            fp.exception_type,
                            json.dumps([asdict(f) for f in fp.frames]),
                        ),
                    )
                    incident_id = int(cur.lastrowid or 0)
                    touched[incident_id] = True
                    self._audit(
                        conn,
                        at,
                        "healbot",
                        "incident_opened",
                        incident_id,
                        f"{fp.service}: {fp.template[:200]}",
                    )
                else:
                    incident_id = int(row["id"])
                    samples: list[str] = json.loads(row["samples"])
                    if sample and len(samples) < max_samples and sample not in samples:
                        samples.append(sample)
                    conn.execute(
                        "UPDATE incidents SET count = count + 1, last_seen = ?, samples = ? WHERE id = ?",
                        (obs.at, json.dumps(samples), incident_id),
                    )
                    touched.setdefault(incident_id, False)
            conn.execute(
                "INSERT INTO cursors (source_id, cursor, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT(source_id) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
                (source_id, cursor, at),
            )
            result = [Ingested(self._incident_row(conn, iid), is_new) for iid, is_new in touched.items()]
        return result

    # --- incidents ---------------------------------------------------------------------------------

    @staticmethod
    def _incident_row(conn: sqlite3.Connection, incident_id: int) -> Incident:
        row = conn.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        if row is None:
            raise StoreError(f"incident #{incident_id} does not exist")
        return _incident(row)

    def incident(self, incident_id: int) -> Incident:
        with self._lock:
            return self._incident_row(self._conn, incident_id)

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
        return [_incident(r) for r in self._query(sql, params)]

    def incidents_in(self, states: Sequence[IncidentState]) -> list[Incident]:
        marks = ",".join("?" for _ in states)
        return [
            _incident(r)
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
            self._set_state(conn, incident_id, state, at=at, actor=actor, detail=detail, error=error)
            return self._incident_row(conn, incident_id)

    def _set_state(
        self,
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
        self._audit(conn, at, actor, f"state:{state.value}", incident_id, detail or (error or ""))

    def begin_diagnosis(self, incident_id: int, *, at: float, actor: str = "healbot") -> Incident:
        with self._tx() as conn:
            conn.execute(
                "UPDATE incidents SET last_diagnosed_at = ?, error = NULL WHERE id = ?", (at, incident_id)
            )
            self._set_state(
                conn, incident_id, IncidentState.DIAGNOSING, at=at, actor=actor, detail="diagnosis started"
            )
            return self._incident_row(conn, incident_id)

    def last_diagnosis_at(self, service: str, fingerprint: str) -> float | None:
        rows = self._query(
            "SELECT MAX(last_diagnosed_at) AS t FROM incidents WHERE service = ? AND fingerprint = ?",
            (service, fingerprint),
        )
        value = rows[0]["t"] if rows else None
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
                self._set_state(
                    conn,
                    incident_id,
                    IncidentState.DIAGNOSIS_FAILED,
                    at=at,
                    actor="healbot",
                    detail=error,
                    error=error,
                )
            else:
                self._audit(
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

    # --- proposals and decisions -------------------------------------------------------------------

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
                    json.dumps([_candidate_to_json(c) for c in candidates]),
                    summary,
                    at,
                    expires_at,
                    ProposalStatus.PENDING.value,
                ),
            )
            self._set_state(
                conn,
                incident_id,
                IncidentState.AWAITING_APPROVAL,
                at=at,
                actor="healbot",
                detail=f"{len(candidates)} candidate(s) at {base_commit[:12]}",
            )
            return _proposal(
                conn.execute("SELECT * FROM proposals WHERE id = ?", (cur.lastrowid,)).fetchone()
            )

    def proposal_by_token(self, token: str) -> Proposal | None:
        rows = self._query("SELECT * FROM proposals WHERE token = ?", (token,))
        return _proposal(rows[0]) if rows else None

    def proposal(self, proposal_id: int) -> Proposal:
        rows = self._query("SELECT * FROM proposals WHERE id = ?", (proposal_id,))
        if not rows:
            raise StoreError(f"proposal #{proposal_id} does not exist")
        return _proposal(rows[0])

    def latest_proposal(self, incident_id: int) -> Proposal | None:
        rows = self._query(
            "SELECT * FROM proposals WHERE incident_id = ? ORDER BY id DESC LIMIT 1", (incident_id,)
        )
        return _proposal(rows[0]) if rows else None

    def pending_proposals(self) -> list[Proposal]:
        rows = self._query(
            "SELECT * FROM proposals WHERE status = ? ORDER BY id", (ProposalStatus.PENDING.value,)
        )
        return [_proposal(r) for r in rows]

    def mark_reminded(self, proposal_id: int) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE proposals SET reminded = 1 WHERE id = ?", (proposal_id,))

    def was_reminded(self, proposal_id: int) -> bool:
        rows = self._query("SELECT reminded FROM proposals WHERE id = ?", (proposal_id,))
        return bool(rows and rows[0]["reminded"])

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
            cur = conn.execute(
                "UPDATE proposals SET status = ? WHERE id = ? AND status = ?",
                (status.value, proposal.id, ProposalStatus.PENDING.value),
            )
            if cur.rowcount != 1:
                return False
            actor = decision.actor if decision else "healbot"
            if decision is not None:
                conn.execute(
                    "INSERT INTO decisions (proposal_id, actor, action, rank, at, accepted, message)"
                    " VALUES (?, ?, ?, ?, ?, 1, ?)",
                    (proposal.id, decision.actor, decision.action.value, decision.rank, at, message),
                )
            self._audit(conn, at, actor, f"proposal:{status.value}", proposal.incident_id, message)
            if incident_state is not None:
                self._set_state(
                    conn, proposal.incident_id, incident_state, at=at, actor=actor, detail=message
                )
            return True

    def record_refused_decision(
        self, proposal: Proposal | None, decision: Decision, message: str, *, at: float
    ) -> None:
        with self._tx() as conn:
            if proposal is not None:
                conn.execute(
                    "INSERT INTO decisions (proposal_id, actor, action, rank, at, accepted, message)"
                    " VALUES (?, ?, ?, ?, ?, 0, ?)",
                    (proposal.id, decision.actor, decision.action.value, decision.rank, at, message),
                )
            self._audit(
                conn,
                at,
                decision.actor,
                "decision_refused",
                proposal.incident_id if proposal else None,
                message,
            )

    def decider(self, proposal_id: int) -> tuple[str, str] | None:
        """Who closed this proposal and how (actor, action), if a person did."""
        rows = self._query(
            "SELECT actor, action FROM decisions WHERE proposal_id = ? AND accepted = 1 ORDER BY id LIMIT 1",
            (proposal_id,),
        )
        return (str(rows[0]["actor"]), str(rows[0]["action"])) if rows else None

    # --- changes and outcomes ----------------------------------------------------------------------

    def create_change(
        self, proposal: Proposal, candidate: Candidate, *, service: str, approved_by: str, at: float
    ) -> Change:
        with self._tx() as conn:
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
            self._audit(
                conn,
                at,
                approved_by,
                "change:applying",
                proposal.incident_id,
                f"#{candidate.fix.rank} {candidate.fix.title[:150]}",
            )
            return _change(conn.execute("SELECT * FROM changes WHERE id = ?", (cur.lastrowid,)).fetchone())

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
            change = _change(conn.execute("SELECT * FROM changes WHERE id = ?", (change_id,)).fetchone())
            self._audit(
                conn, at, "healbot", f"change:{status.value}", change.incident_id, detail or (commit or "")
            )
            if incident_state is not None:
                self._set_state(
                    conn, change.incident_id, incident_state, at=at, actor="healbot", detail=detail
                )
            return change

    def change(self, change_id: int) -> Change | None:
        rows = self._query("SELECT * FROM changes WHERE id = ?", (change_id,))
        return _change(rows[0]) if rows else None

    def change_digest(self, change_id: int) -> str:
        rows = self._query("SELECT digest FROM changes WHERE id = ?", (change_id,))
        if not rows:
            raise StoreError(f"change #{change_id} does not exist")
        return str(rows[0]["digest"])

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
        return [_change(r) for r in self._query(sql, params)]

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
            self._audit(
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
        rows = self._query("SELECT snapshot FROM baselines WHERE change_id = ?", (change_id,))
        return _snapshot_from_json(json.loads(rows[0]["snapshot"])) if rows else None

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
        return [_change(r) for r in self._query(sql + " ORDER BY c.id", params)]

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
                candidate = _candidate_from_json(item)
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

    # --- chat outbox --------------------------------------------------------------------------------

    def outbox_put(
        self, chat_id: str, key: str, kind: str, payload: str, *, incident_id: int | None, at: float
    ) -> OutboxItem:
        """Queue a message once per (chat, key); a second put with the same key returns the first."""
        with self._tx() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO outbox (chat_id, key, kind, payload, incident_id, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (chat_id, key, kind, payload, incident_id, at),
            )
            row = conn.execute(
                "SELECT * FROM outbox WHERE chat_id = ? AND key = ?", (chat_id, key)
            ).fetchone()
            return _outbox(row)

    def outbox_pending(self, limit: int = 100) -> list[OutboxItem]:
        rows = self._query("SELECT * FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT ?", (limit,))
        return [_outbox(r) for r in rows]

    def outbox_mark_sent(self, item_id: int, message_id: int, *, at: float) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE outbox SET sent_at = ?, message_id = ?, attempts = attempts + 1, last_error = NULL WHERE id = ?",
                (at, message_id, item_id),
            )

    def outbox_mark_failed(self, item_id: int, error: str) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                (error[:500], item_id),
            )

    def outbox_item(self, chat_id: str, key: str) -> OutboxItem | None:
        rows = self._query("SELECT * FROM outbox WHERE chat_id = ? AND key = ?", (chat_id, key))
        return _outbox(rows[0]) if rows else None

    def outbox_by_message(self, chat_id: str, message_id: int) -> OutboxItem | None:
        rows = self._query("SELECT * FROM outbox WHERE chat_id = ? AND message_id = ?", (chat_id, message_id))
        return _outbox(rows[0]) if rows else None

    # --- progress lines of the incident cards -----------------------------------------------------

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

    # --- retries of a failed diagnosis -------------------------------------------------------------

    def retry_attempts(self, incident_id: int) -> int:
        rows = self._query("SELECT attempts FROM diagnosis_retries WHERE incident_id = ?", (incident_id,))
        return int(rows[0]["attempts"]) if rows else 0

    def schedule_retry(self, incident_id: int, attempts: int, due_at: float, *, at: float) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO diagnosis_retries (incident_id, attempts, due_at) VALUES (?, ?, ?)"
                " ON CONFLICT(incident_id) DO UPDATE SET attempts = excluded.attempts, due_at = excluded.due_at",
                (incident_id, attempts, due_at),
            )
            self._audit(
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

    # --- template clusters (bot.grouping.ClusterStore) -----------------------------------------------

    def load_clusters(self, service: str, is_error: bool) -> list[SavedCluster]:
        """The saved clusters of one service and error class, oldest first; a malformed row is logged and
        skipped, never fatal. `updated_at` is when a line last matched the cluster (as last saved)."""
        try:
            rows = self._query(
                "SELECT id, key, template, learned, size, updated_at FROM template_clusters"
                " WHERE service = ? AND is_error = ? ORDER BY id",
                (service, int(is_error)),
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the template clusters from {self.path}: {exc}") from exc
        found: list[SavedCluster] = []
        for r in rows:
            try:
                found.append(_saved_cluster(r))
            except (TypeError, ValueError) as exc:
                log.warning("skipped the malformed template cluster row %s of %s: %s", r["id"], service, exc)
        return found

    def save_clusters(
        self,
        service: str,
        is_error: bool,
        clusters: Sequence[SavedCluster],
        *,
        at: float,
        forget: Collection[str] = (),
    ) -> None:
        """Insert or update clusters by key and delete the keys in `forget`, in one transaction; a cluster
        keeps its place in the order. A cluster's `last_seen` is stored (`at` when it has none)."""
        rows = [
            (
                service,
                int(is_error),
                c.key,
                c.template,
                json.dumps(list(c.learned)),
                c.size,
                c.last_seen or at,
            )
            for c in clusters
        ]
        try:
            with self._tx() as conn:
                conn.executemany(
                    "DELETE FROM template_clusters WHERE service = ? AND is_error = ? AND key = ?",
                    [(service, int(is_error), key) for key in forget],
                )
                conn.executemany(
                    "INSERT INTO template_clusters (service, is_error, key, template, learned, size, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(service, is_error, key) DO UPDATE SET"
                    " template = excluded.template, learned = excluded.learned, size = excluded.size,"
                    " updated_at = excluded.updated_at",
                    rows,
                )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write the template clusters to {self.path}: {exc}") from exc

    def prune_clusters(
        self, services: Collection[str], *, now: float, keep_days: float = CLUSTER_KEEP_DAYS
    ) -> int:
        """Delete the clusters no line matched for `keep_days` and those of services not in `services`;
        returns how many rows went."""
        try:
            with self._tx() as conn:
                deleted = conn.execute(
                    "DELETE FROM template_clusters WHERE updated_at < ?"
                    " OR service NOT IN (SELECT value FROM json_each(?))",
                    (now - keep_days * 86400.0, json.dumps(sorted(services))),
                ).rowcount
        except sqlite3.Error as exc:
            raise StoreError(f"cannot prune the template clusters in {self.path}: {exc}") from exc
        return int(deleted)

    # --- settings and audit ------------------------------------------------------------------------

    def get_setting(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM settings WHERE key = ?", (key,))
        return str(rows[0]["value"]) if rows else None

    def set_setting(self, key: str, value: str | None, *, actor: str, at: float) -> None:
        with self._tx() as conn:
            if value is None:
                conn.execute("DELETE FROM settings WHERE key = ?", (key,))
            else:
                conn.execute(
                    "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )
            self._audit(conn, at, actor, f"setting:{key}", None, value or "(cleared)")

    def audit(
        self, actor: str, event: str, detail: str, *, at: float, incident_id: int | None = None
    ) -> None:
        with self._tx() as conn:
            self._audit(conn, at, actor, event, incident_id, detail)

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


# --- backups ----------------------------------------------------------------------------------------


def backups(db_path: str | Path) -> list[Path]:
    """The daily backups of `db_path`, newest first."""
    directory = Path(db_path).parent / BACKUP_DIR
    if str(db_path) == ":memory:" or not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _BACKUP_NAME.match(p.name)]
    return sorted(found, key=lambda p: p.name, reverse=True)


def _file_integrity_problem(path: Path) -> str | None:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            found = [str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall()]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return str(exc)
    return None if found == ["ok"] else "; ".join(found[:3])


def _open_problem(target: str, problem: str) -> str:
    """What the operator reads when the state database cannot be used: why, and the way back."""
    if "locked" in problem:
        what = (
            f"the state database {target} is locked by another process (another healbot, or a sqlite3 shell "
            "holding a transaction); stop it and start healbot again"
        )
    else:
        what = (
            f"the state database {target} cannot be used ({problem}); stop healbot, move the damaged file "
            "(and its -wal and -shm files) aside"
        )
    good = next((b for b in backups(target) if _file_integrity_problem(b) is None), None)
    if good is not None:
        return f"{what}; the last good backup is {good}: copy it to {target} to restore"
    return f"{what}; there is no backup yet in {Path(target).parent / BACKUP_DIR}"


# --- row <-> model ---------------------------------------------------------------------------------


def _write_problem(path: str, exc: sqlite3.Error) -> str:
    text = str(exc)
    if "full" in text:
        return (
            f"cannot write the state database {path}: {text}; nothing was written; "
            "free disk space and healbot carries on where it stopped"
        )
    return f"cannot write the state database {path}: {text}; nothing was written"


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies (which contain `;`) whole."""
    statements: list[str] = []
    buffer = ""
    for part in script.split(";"):
        buffer += part
        candidate = buffer.strip()
        if not candidate:
            buffer = ""
            continue
        if candidate.upper().startswith("CREATE TRIGGER") and not candidate.upper().endswith("END"):
            buffer += ";"
            continue
        statements.append(candidate)
        buffer = ""
    return statements


def _saved_cluster(row: sqlite3.Row) -> SavedCluster:
    key, template, size = row["key"], row["template"], row["size"]
    if not isinstance(key, str) or not isinstance(template, str) or not isinstance(size, int):
        raise TypeError(
            f"unexpected column types {type(key).__name__}, {type(template).__name__}, {type(size).__name__}"
        )
    learned = json.loads(row["learned"])
    if not isinstance(learned, list) or not all(type(i) is int for i in learned):
        raise ValueError(f"learned positions {str(row['learned'])[:40]!r} are not a list of integers")
    last_seen = row["updated_at"]
    if not isinstance(last_seen, int | float):
        raise TypeError(f"unexpected column type {type(last_seen).__name__} of updated_at")
    return SavedCluster(key, template, size, tuple(learned), float(last_seen))


def _incident(row: sqlite3.Row) -> Incident:
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


def _candidate_to_json(c: Candidate) -> dict[str, object]:
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


def _candidate_from_json(d: dict[str, object]) -> Candidate:
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


def _proposal(row: sqlite3.Row) -> Proposal:
    return Proposal(
        id=int(row["id"]),
        incident_id=int(row["incident_id"]),
        token=row["token"],
        base_commit=row["base_commit"],
        candidates=tuple(_candidate_from_json(c) for c in json.loads(row["candidates"])),
        created_at=float(row["created_at"]),
        expires_at=float(row["expires_at"]),
        status=ProposalStatus(row["status"]),
        summary=row["summary"],
    )


def _change(row: sqlite3.Row) -> Change:
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


def _outbox(row: sqlite3.Row) -> OutboxItem:
    return OutboxItem(
        id=int(row["id"]),
        chat_id=row["chat_id"],
        key=row["key"],
        kind=row["kind"],
        payload=row["payload"],
        incident_id=row["incident_id"],
        created_at=float(row["created_at"]),
        attempts=int(row["attempts"]),
        sent_at=row["sent_at"],
        message_id=row["message_id"],
    )


def _snapshot_to_json(s: HealthSnapshot) -> dict[str, object]:
    data = asdict(s)
    data["errors_by_fingerprint"] = [list(p) for p in s.errors_by_fingerprint]
    return data


def _snapshot_from_json(d: dict[str, object]) -> HealthSnapshot:
    pairs = d.pop("errors_by_fingerprint", [])
    assert isinstance(pairs, list)
    return HealthSnapshot(**d, errors_by_fingerprint=tuple((str(k), int(v)) for k, v in pairs))  # type: ignore[arg-type]
