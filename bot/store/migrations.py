"""The schema: versioned migrations, applied in order; `PRAGMA user_version` is the version reached."""

from __future__ import annotations

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
    # 7: a send in flight is recorded before it goes out, with the chat's last recorded message id, so a
    # copy delivered just before a crash can be found and retired after the restart
    """
    ALTER TABLE outbox ADD COLUMN sending_since REAL;
    ALTER TABLE outbox ADD COLUMN after_message_id INTEGER;
    """,
    # 8: the claude processes running now, so the next start kills what a killed daemon left behind; at
    # most one per incident
    """
    CREATE TABLE claude_children (
        id INTEGER PRIMARY KEY,
        pid INTEGER NOT NULL,
        start_ticks INTEGER NOT NULL,
        boot_id TEXT NOT NULL,
        argv TEXT NOT NULL,
        owner_pid INTEGER NOT NULL,
        owner_start_ticks INTEGER NOT NULL,
        incident_id INTEGER,
        session_id TEXT,
        started_at REAL NOT NULL
    );
    CREATE UNIQUE INDEX claude_children_one_per_incident ON claude_children(incident_id)
        WHERE incident_id IS NOT NULL;
    """,
    # 9: the commit a change is about to land (its fix, then its revert), recorded before the repo is
    # touched, so a restart finishes exactly a half-done healbot step
    """
    ALTER TABLE changes ADD COLUMN planned_commit TEXT;
    ALTER TABLE changes ADD COLUMN planned_revert TEXT;
    """,
    # 10: the error times per fingerprint of the last hour or so, so the "before" window of a verdict
    # survives a daemon restart (bounded by bot.health.ErrorLedger)
    """
    CREATE TABLE error_counts (
        service TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        last_seen REAL NOT NULL,
        recent BLOB NOT NULL,
        buckets TEXT NOT NULL DEFAULT '[]',
        PRIMARY KEY (service, fingerprint)
    );
    """,
    # 11: what a /metrics scrape counts stays cheap on a database months old (bot/store/stats.py)
    """
    CREATE INDEX outbox_unsent ON outbox(id) WHERE sent_at IS NULL;
    CREATE INDEX proposals_status ON proposals(status);
    CREATE INDEX diagnoses_incident ON diagnoses(incident_id);
    """,
    # 12: a snoozed proposal remembers until when (its expiry and reminder moved with it), and each status
    # line of a card its kind, so the verdict stays pinned and refused presses collapse into one line
    """
    ALTER TABLE proposals ADD COLUMN snoozed_until REAL;
    ALTER TABLE card_progress ADD COLUMN kind TEXT NOT NULL DEFAULT 'step';
    ALTER TABLE card_progress ADD COLUMN repeats INTEGER NOT NULL DEFAULT 1;
    """,
)


def split_sql(script: str) -> list[str]:
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
