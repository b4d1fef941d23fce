"""One exception tree. Callers branch on classes, never on message text.

HealbotError
├── ConfigError                 the config file is wrong (names the key and the file)
├── StoreError                  SQLite could not be read or written
├── SourceError                 a log source cannot be read (missing, permission, manager down)
├── RunnerError                 the LLM backend failed
│   ├── RunnerNotFound          binary missing / not executable
│   ├── RunnerAuthError         not logged in, invalid key (401/403)
│   ├── RunnerOverloaded        429 / 529 / repeated overload
│   ├── RunnerTimeout           wall-clock limit or no-output watchdog
│   ├── RunnerCancelled         cancelled by the bot (shutdown, /pause)
│   ├── RunnerLimitReached      --max-turns or --max-budget-usd hit
│   └── RunnerOutputError       no result, malformed stream, output not matching the schema
├── DiagnosisError              the answer could not become candidates (invalid JSON shape, bad edit)
├── HealerError                 applying or undoing a change failed
│   ├── PatchError              `old` missing or ambiguous, path escape, check command failed
│   │   └── PathEscapeError     a path leaves the repo or touches .git
│   ├── DirtyTreeError          the operator has uncommitted work; never stashed
│   ├── StaleProposalError      HEAD moved or the digest no longer matches
│   └── GitError                git itself failed
├── ServiceError                a service manager call failed
│   └── RestartFailed           not up, or not still up after the settle time; FATAL/errored
└── ApprovalError               a decision cannot be honoured (expired, unknown token, already decided)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.models import RunStats


class HealbotError(Exception):
    """Base of every error healbot raises on purpose."""


class ConfigError(HealbotError):
    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        self.path = path
        self.key = key
        where = ""
        if path and key:
            where = f"{path}: {key}: "
        elif path:
            where = f"{path}: "
        elif key:
            where = f"{key}: "
        super().__init__(f"{where}{message}")


class StoreError(HealbotError):
    pass


class SourceError(HealbotError):
    pass


class RunnerError(HealbotError):
    """`stats` holds the run's telemetry when the CLI reported it before failing."""

    stats: RunStats | None = None


class RunnerNotFound(RunnerError):
    pass


class RunnerAuthError(RunnerError):
    pass


class RunnerOverloaded(RunnerError):
    pass


class RunnerTimeout(RunnerError):
    pass


class RunnerCancelled(RunnerError):
    pass


class RunnerLimitReached(RunnerError):
    pass


class RunnerOutputError(RunnerError):
    pass


class DiagnosisError(HealbotError):
    stats: RunStats | None = None


class HealerError(HealbotError):
    pass


class PatchError(HealerError):
    pass


class PathEscapeError(PatchError):
    pass


class DirtyTreeError(HealerError):
    pass


class StaleProposalError(HealerError):
    pass


class GitError(HealerError):
    pass


class ServiceError(HealbotError):
    pass


class RestartFailed(ServiceError):
    pass


class ApprovalError(HealbotError):
    pass
