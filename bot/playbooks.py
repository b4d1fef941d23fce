"""Deterministic fix candidates for known situations, offered when Claude cannot diagnose (it hangs, is
rate-limited, logged out, or answers nonsense). No LLM: each is labelled as a playbook, and each still goes
through the healers' prepare (the exact diff) and the operator's approval like any other candidate.

- restart a crashed service: the manager says the service is stopped (never when it reports a crash
  loop or gave up: those are not fought);
- revert the suspect commit: the newest commit touching the innermost failing file of the repo, made in
  the week before the incident, not by healbot, not the repository's first commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bot import gitinfo
from bot.errors import HealbotError
from bot.evidence import repo_relative
from bot.models import Fix, FixKind, Incident, Risk, ServiceState

LABEL = "Playbook (no LLM)"
SUSPECT_WINDOW_S = 7 * 86400.0


def restart_fix(state: ServiceState | None, service: str) -> Fix | None:
    if state is not ServiceState.STOPPED:
        return None
    return Fix(
        rank=1,
        title=f"{LABEL}: restart the crashed service",
        rationale=f"{service} is not running according to its process manager; a restart brings it back. "
        "Deterministic playbook: no LLM was involved.",
        risk=Risk.LOW,
        kind=FixKind.RESTART,
    )


def revert_fix(incident: Incident, repo: Path) -> Fix | None:
    """The suspect commit: newest on the innermost failing file inside the repo, within the window."""
    root = repo.resolve()
    paths = [p for p in (repo_relative(root, frame.path) for frame in reversed(incident.frames)) if p]
    if not paths:
        return None
    try:
        [line] = gitinfo.recent_commits(root, [paths[0]], n=1) or [""]
        sha, _, rest = line.partition(" ")
        if not sha or not gitinfo.commit_exists(root, sha) or gitinfo.is_healbot_commit(root, sha):
            return None
        if not gitinfo.commit_exists(root, f"{sha}~1"):
            return None  # the first commit: reverting it would delete the repo
        day, _, subject = rest.partition(" ")
        made = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    except (HealbotError, ValueError):
        return None
    if made < incident.first_seen - SUSPECT_WINDOW_S or made > incident.first_seen + 86400.0:
        return None
    return Fix(
        rank=1,
        title=f"{LABEL}: revert {sha} ({subject[:60]})",
        rationale=f"{sha} is the latest change to {paths[0]}, where the error is raised, made shortly before "
        "it began. Deterministic playbook: no LLM was involved.",
        risk=Risk.MEDIUM,
        kind=FixKind.REVERT_COMMIT,
        commit=sha,
    )


def playbook_fixes(incident: Incident, *, repo: Path, state: ServiceState | None) -> tuple[Fix, ...]:
    """The playbooks that apply, ranked: the revert of the suspect commit first, then a restart."""
    found: Sequence[Fix | None] = (revert_fix(incident, repo), restart_fix(state, incident.service))
    return tuple(fix for fix in found if fix is not None)
