"""The vocabulary of healbot: frozen dataclasses and enums, standard library only.

Every other module speaks in these types; no dicts of strings cross a module boundary.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

# The records and fingerprints live apart, so that `healbot scan` imports them without the rest; re-exported.
from bot.record_types import Fingerprint as Fingerprint  # noqa: PLC0414
from bot.record_types import Frame as Frame  # noqa: PLC0414
from bot.record_types import LogLine as LogLine  # noqa: PLC0414
from bot.record_types import LogRecord as LogRecord  # noqa: PLC0414

if TYPE_CHECKING:
    from bot.mcp_server.scope import ToolScope


class IncidentState(enum.StrEnum):
    """Where an incident stands in the pipeline. Persisted before each side effect."""

    OPEN = "open"  # detected, waiting for (or throttled from) diagnosis
    DIAGNOSING = "diagnosing"
    AWAITING_APPROVAL = "awaiting_approval"
    APPLYING = "applying"  # approved; the commit may or may not exist yet
    VERIFYING = "verifying"  # committed and restarted; health is being compared
    RESOLVED = "resolved"  # fix kept
    REVERTED = "reverted"  # fix made things worse and was reverted
    NEEDS_HUMAN = "needs_human"  # inconclusive verdict, failed apply, interrupted step
    REJECTED = "rejected"
    EXPIRED = "expired"
    DIAGNOSIS_FAILED = "diagnosis_failed"

    @property
    def is_open(self) -> bool:
        return self not in _CLOSED_STATES


_CLOSED_STATES = frozenset(
    {IncidentState.RESOLVED, IncidentState.REVERTED, IncidentState.REJECTED, IncidentState.EXPIRED}
)


class FixKind(enum.StrEnum):
    PATCH = "patch"
    RESTART = "restart"
    RUNBOOK = "runbook"
    REVERT_COMMIT = "revert_commit"


class Risk(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class ProposalStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    STALE = "stale"  # HEAD moved or digest changed before approval
    SUPERSEDED = "superseded"


class DecisionAction(enum.StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    SNOOZE = "snooze"


class ChangeStatus(enum.StrEnum):
    APPLYING = "applying"  # recorded before the healer runs; a crash leaves it here
    COMMITTED = "committed"
    RESTARTED = "restarted"
    KEPT = "kept"
    REVERTED = "reverted"
    NEEDS_HUMAN = "needs_human"
    FAILED = "failed"  # apply started but no commit was made


class Verdict(enum.StrEnum):
    BETTER = "better"
    SAME = "same"
    WORSE = "worse"
    INCONCLUSIVE = "inconclusive"


class ServiceState(enum.StrEnum):
    RUNNING = "running"
    STARTING = "starting"
    STOPPED = "stopped"
    CRASH_LOOP = "crash_loop"  # PM2 errored/unstable, supervisord BACKOFF, docker restarting
    FATAL = "fatal"  # supervisord FATAL, systemd failed
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Incident:
    id: int
    service: str
    fingerprint: str
    title: str
    state: IncidentState
    first_seen: float
    last_seen: float
    count: int
    samples: tuple[str, ...]
    exception_type: str | None = None
    frames: tuple[Frame, ...] = ()
    last_diagnosed_at: float | None = None
    error: str | None = None  # last failure recorded on the incident, in plain words


@dataclass(frozen=True, slots=True)
class Edit:
    path: str
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Fix:
    """One candidate as proposed by the runner (or a playbook), before materialisation."""

    rank: int
    title: str
    rationale: str
    risk: Risk
    kind: FixKind
    edits: tuple[Edit, ...] = ()
    runbook: str | None = None  # name of a command from config, for RUNBOOK
    commit: str | None = None  # commit to revert, for REVERT_COMMIT


@dataclass(frozen=True, slots=True)
class RunStats:
    runner: str
    duration_s: float
    cost_usd: float | None = None
    turns: int | None = None
    session_id: str | None = None
    tool_calls: tuple[tuple[str, int], ...] = ()  # (tool, calls) in order of first use: "looked at"


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a Runner returns: the structured answer (already JSON-decoded) and telemetry."""

    structured: object
    text: str
    stats: RunStats


@dataclass(frozen=True, slots=True)
class Diagnosis:
    summary: str
    fixes: tuple[Fix, ...]
    stats: RunStats


@dataclass(frozen=True, slots=True)
class DiffStats:
    files: int
    added: int
    removed: int


@dataclass(frozen=True, slots=True)
class Candidate:
    """A fix made concrete: the exact change the operator approves."""

    fix: Fix
    diff: str  # exact unified diff for PATCH/REVERT_COMMIT; "" otherwise
    digest: str  # sha256 over diff + base commit + kind + parameters
    stats: DiffStats = field(default_factory=lambda: DiffStats(0, 0, 0))
    check_passed: bool | None = None  # None: no check command configured / not applicable
    check_output: str = ""


@dataclass(frozen=True, slots=True)
class Proposal:
    id: int
    incident_id: int
    token: str  # opaque, url-safe, <= 32 chars; what buttons carry
    base_commit: str
    candidates: tuple[Candidate, ...]
    created_at: float
    expires_at: float
    status: ProposalStatus
    summary: str = ""
    snoozed_until: float | None = None  # a person pressed Snooze; expiry and reminder moved with it


class StatusKind(enum.StrEnum):
    """What a status line on a card is: a step, the verdict (always shown), a refused press (collapsed)."""

    STEP = "step"
    VERDICT = "verdict"
    REFUSAL = "refusal"


@dataclass(frozen=True, slots=True)
class StatusLine:
    text: str
    kind: StatusKind = StatusKind.STEP
    repeats: int = 1  # a refusal line stands for this many refused presses


@dataclass(frozen=True, slots=True)
class Decision:
    proposal_token: str
    actor: str  # "console", "telegram:12345", …
    action: DecisionAction
    rank: int | None = None  # candidate rank for APPROVE
    digest: str | None = None  # the digest the approver saw, when the channel knows it


@dataclass(frozen=True, slots=True)
class Change:
    id: int
    incident_id: int
    proposal_id: int
    rank: int
    service: str
    kind: FixKind
    status: ChangeStatus
    commit: str | None
    revert_commit: str | None
    approved_by: str
    created_at: float


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    state: ServiceState
    pid: int | None = None
    restarts: int | None = None  # manager's restart counter when it has one
    detail: str = ""


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    at: float
    process_up: bool | None  # None: not probed
    http_status: int | None = None
    http_latency_ms: float | None = None
    tcp_ok: bool | None = None
    errors_total: int = 0
    errors_by_fingerprint: tuple[tuple[str, int], ...] = ()
    window_s: float = 0.0
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    change_id: int
    before: HealthSnapshot
    after: HealthSnapshot
    verdict: Verdict
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AuditEvent:
    at: float
    actor: str
    event: str
    incident_id: int | None
    detail: str


@dataclass(frozen=True, slots=True)
class SourceBatch:
    """Lines read since a cursor, and the cursor to persist once they are committed.

    `resume(i)` is the cursor at the *start* of `lines[i]`: reading from it gives `lines[i]` first. The
    pipeline persists it while a multi-line record that began at `lines[i]` is still being assembled, so a
    crash re-reads that record rather than losing it. It is computed only when asked (a flood has many
    lines). None: the source cannot say where each line starts (see `bot.flow.observe`).
    """

    lines: tuple[LogLine, ...]
    cursor: str  # opaque to everyone but the source that made it (JSON text)
    resume: Callable[[int], str] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class RunRequest:
    prompt: str
    schema: str  # JSON schema text for --json-schema
    cwd: str
    resume_session: str | None = None  # follow-ups: --resume <id>
    persist_session: bool = False  # keep the transcript so a later --resume works
    system_prompt: str | None = None
    incident_id: int | None = None  # the incident it is for: at most one claude per incident at a time
    tools: ToolScope | None = None  # what healbot's MCP tools may look at; None: no tools at all


@dataclass(frozen=True, slots=True)
class DecisionResult:
    accepted: bool
    message: str  # plain words for the person who acted


@dataclass(frozen=True, slots=True)
class AppliedChange:
    commit: str | None  # None for kinds that make no commit (restart, runbook)
    detail: str = ""


@dataclass(frozen=True, slots=True)
class CodeContext:
    path: str  # relative to the repo
    line: int
    function: str
    snippet: str  # numbered source lines around `line`, at HEAD


@dataclass(frozen=True, slots=True)
class Evidence:
    """Everything a diagnosis may see. Samples are already redacted; nothing here is a secret."""

    service: str
    title: str
    fingerprint: str
    exception_type: str | None
    count: int
    first_seen: float
    last_seen: float
    samples: tuple[str, ...]
    code: tuple[CodeContext, ...]
    recent_commits: tuple[str, ...]  # "abc1234 2026-11-20 subject (path, …)"
    past_outcomes: tuple[str, ...]  # "2026-11-21 patch 'title' → reverted (worse: …)"
    allowed_paths: tuple[str, ...]
    runbooks: tuple[str, ...]  # names only
    head: str
