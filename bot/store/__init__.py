"""SQLite state: the only package that speaks SQL. WAL mode, versioned migrations, one transaction per change.

Everything the bot must not forget lives here: cursors, incidents, diagnoses, proposals, decisions,
changes, outcomes, settings, template clusters, the progress lines of the cards and an append-only audit
log (UPDATE and DELETE on it are refused by triggers).

`Store` is one object over one connection; its methods come from one module per group of tables:

    connection   open (WAL, integrity, migrations), transactions, reads     (StoreBase)
    migrations   the versioned schema
    backups      the daily backup files on disk
    maintenance  the integrity check and the online (daily) backup
    incidents    cursors, observations counted into incidents, states, diagnoses
    retries      retries of a failed diagnosis
    proposals    proposals and decisions
    changes      changes, baselines and outcomes
    error_counts the error times per fingerprint behind a verdict's baseline
    outbox       the chat outbox
    progress     the progress lines of the incident cards
    clusters     template clusters
    children     the claude processes running now (killed at the next start if a crash left them)
    settings     operator settings
    audit        the audit log
    stats        counts for monitoring (/metrics), read at scrape time
"""

from __future__ import annotations

from bot.store.audit import AuditQueries
from bot.store.backups import BACKUP_DIR, BACKUP_KEEP, backups
from bot.store.changes import ChangeQueries
from bot.store.children import ChildQueries, ClaudeChild
from bot.store.clusters import CLUSTER_KEEP_DAYS, ClusterQueries
from bot.store.error_counts import ErrorCountQueries, ErrorSeries
from bot.store.incidents import SAMPLE_CAP_CHARS, IncidentQueries, Ingested, Observation
from bot.store.maintenance import MaintenanceQueries
from bot.store.migrations import MIGRATIONS
from bot.store.outbox import OutboxItem, OutboxQueries
from bot.store.progress import PROGRESS_KEEP, PROGRESS_LINE_CAP, ProgressQueries
from bot.store.proposals import ProposalQueries
from bot.store.retries import RetryQueries
from bot.store.settings import SettingQueries
from bot.store.stats import AlertLookups, StatsQueries, StoreCounts

__all__ = [
    "BACKUP_DIR",
    "BACKUP_KEEP",
    "CLUSTER_KEEP_DAYS",
    "MIGRATIONS",
    "PROGRESS_KEEP",
    "PROGRESS_LINE_CAP",
    "SAMPLE_CAP_CHARS",
    "ClaudeChild",
    "ErrorSeries",
    "Ingested",
    "Observation",
    "OutboxItem",
    "Store",
    "StoreCounts",
    "backups",
]


class Store(
    IncidentQueries,
    RetryQueries,
    ProposalQueries,
    ChangeQueries,
    ErrorCountQueries,
    OutboxQueries,
    ProgressQueries,
    ClusterQueries,
    ChildQueries,
    SettingQueries,
    AuditQueries,
    MaintenanceQueries,
    StatsQueries,
    AlertLookups,
):
    """The state database: `Store.open(path)`, then one method per question or change."""
