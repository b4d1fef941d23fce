"""Protocols between the steps of the pipeline. Concrete classes live elsewhere and are looked up."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from bot.models import (
    AppliedChange,
    Candidate,
    Decision,
    DecisionResult,
    Fix,
    FixKind,
    Incident,
    Proposal,
    RunRequest,
    RunResult,
    ServiceStatus,
    SourceBatch,
)


class Clock(Protocol):
    def now(self) -> float: ...  # unix time
    def monotonic(self) -> float: ...


class LogSource(Protocol):
    """Reads new lines since a cursor. Stateless between calls: the store keeps the cursor."""

    source_id: str  # unique and stable, e.g. "file:/var/log/web.log"
    service: str

    def read(self, cursor: str | None, max_bytes: int = 4 * 1024 * 1024) -> SourceBatch:
        """Return complete lines after `cursor` (None = first run: start at the end)."""
        ...


class ServiceManager(Protocol):
    """Status and restart of one service under one process manager. Blocking; call via to_thread."""

    service: str

    def status(self) -> ServiceStatus: ...

    def restart(self, settle_s: float) -> ServiceStatus:
        """Restart and return once it is up and still up after `settle_s`; else raise RestartFailed."""
        ...

    def log_paths(self) -> Sequence[str]:
        """Log files the manager writes for this service (may be empty)."""
        ...

    def check(self) -> str | None:
        """For `healbot doctor`: None when reachable, else the problem and its fix in plain words."""
        ...


class ServiceManagerFactory(Protocol):
    """The class registered under the `healbot.service_managers` entry point group."""

    def from_options(self, service: str, options: Mapping[str, object], config_path: str) -> ServiceManager:
        """Build from the `[services.X.manager]` table (minus `type`); raise ConfigError naming bad keys
        as `services.X.manager.KEY`. Must not touch the system (config validation calls it)."""
        ...


@dataclass(frozen=True, slots=True)
class SandboxSettings:
    """`[sandbox]`: how a check command, which runs code no human approved yet, is confined."""

    bwrap: str = "bwrap"  # bubblewrap: a path, or a name looked up on PATH
    user: str = "nobody"  # when healbot runs as root, the check runs as this user (name or uid)
    memory_mb: int = 4096  # RLIMIT_AS
    max_processes: int = 256  # RLIMIT_NPROC
    max_file_mb: int = 1024  # RLIMIT_FSIZE
    tmp_mb: int = 512  # size of the check's private /tmp


@dataclass(frozen=True, slots=True)
class HealContext:
    """What a healer may know about the service it changes."""

    service: str
    repo: str
    allowed_paths: tuple[str, ...] = ()  # glob patterns relative to the repo; empty = whole repo
    check_command: tuple[str, ...] = ()  # argv run in the scratch worktree before proposing
    check_timeout_s: float = 300.0
    runbooks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    check_read_only_paths: tuple[str, ...] = ()  # host paths the sandboxed check may read, besides its own
    sandbox: SandboxSettings = field(default_factory=SandboxSettings)


class Healer(Protocol):
    kind: FixKind

    def prepare(self, ctx: HealContext, fix: Fix, base_commit: str) -> Candidate:
        """Materialise the fix without touching the operator's tree; raise PatchError and kin."""
        ...

    def apply(
        self, ctx: HealContext, candidate: Candidate, base_commit: str, trailers: Mapping[str, str]
    ) -> AppliedChange:
        """Apply exactly `candidate` if HEAD == base_commit and the digest still matches."""
        ...

    def undo(self, ctx: HealContext, commit: str, trailers: Mapping[str, str]) -> str:
        """`git revert` exactly `commit` (one new commit with trailers); return the revert commit."""
        ...


@runtime_checkable
class SandboxedCheck(Protocol):
    """A healer that runs the check command in a sandbox; `healbot doctor` asks it whether that works."""

    def sandbox_problem(self, ctx: HealContext) -> str | None:
        """None when the check of `ctx` can run sandboxed, else the problem and its fix in plain words."""
        ...


@runtime_checkable
class PreflightHealer(Healer, Protocol):
    """A healer that can tell, before an approval is taken, that its apply would be refused now."""

    def preflight(self, ctx: HealContext, candidate: Candidate) -> None:
        """Raise DirtyTreeError when the repo holds work in progress where the change would go."""
        ...


@runtime_checkable
class CommitHealer(Healer, Protocol):
    """A healer whose change is one commit, made in two steps so the caller can record the commit id
    between them: `plan*` builds it out of sight, `land` makes it the checked-out state with the ref
    moved last. `land` is idempotent: after a kill it finishes exactly that landing, or refuses."""

    def plan(
        self, ctx: HealContext, candidate: Candidate, base_commit: str, trailers: Mapping[str, str]
    ) -> str: ...

    def plan_undo(self, ctx: HealContext, commit: str, trailers: Mapping[str, str]) -> str: ...

    def land(self, ctx: HealContext, commit: str, checkpoint: Callable[[str], None] | None = None) -> str: ...


class Runner(Protocol):
    name: str

    async def run(self, request: RunRequest) -> RunResult: ...


DecisionHandler = Callable[[Decision], Awaitable[DecisionResult]]


class ApprovalChannel(Protocol):
    """Console or Telegram: shows proposals and progress; decisions come back through `decide`."""

    async def start(self, decide: DecisionHandler) -> None: ...

    async def stop(self) -> None: ...

    async def present(self, incident: Incident, proposal: Proposal) -> None: ...

    async def progress(self, incident: Incident, text: str) -> None: ...

    async def notify(self, text: str) -> None: ...

    async def remind(self, incident: Incident, proposal: Proposal, text: str) -> None:
        """A reminder about a pending proposal, shown with its card where the channel can."""
