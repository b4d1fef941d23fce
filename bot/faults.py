"""Fault injection for crash-consistency tests: `HEALBOT_FAULT=<step>` makes the daemon SIGKILL itself the
first time it reaches that step. Without the variable every `hit` is a no-op.

Tests only: an operator never sets it. The variable is read at each hit, so a test may also set it in-process.
"""

from __future__ import annotations

import enum
import os
import signal
import sys

ENV_VAR = "HEALBOT_FAULT"


class Step(enum.StrEnum):
    """The pipeline's steps, in order; a SIGKILL right after each must leave a recoverable state."""

    INCIDENT_STORED = "incident_stored"
    DIAGNOSIS_STARTED = "diagnosis_started"
    WORKTREE_PREPARED = "worktree_prepared"
    PROPOSAL_STORED = "proposal_stored"
    CARD_SENT = "card_sent"
    APPROVAL_RECORDED = "approval_recorded"  # the proposal closed as approved and its change, in one go
    COMMIT_PLANNED = "commit_planned"  # the fix's commit built out of sight and its id stored
    WORKTREE_UPDATED = "worktree_updated"  # its files written in the work tree; index and ref not yet
    INDEX_UPDATED = "index_updated"  # the index too; the ref not yet
    COMMIT_MADE = "commit_made"  # the ref moved; the store not yet told
    RESTART_ISSUED = "restart_issued"
    VERIFICATION_RUNNING = "verification_running"
    REVERT_PLANNED = "revert_planned"  # the revert's commit built and its id stored
    REVERT_WORKTREE_UPDATED = "revert_worktree_updated"
    REVERT_INDEX_UPDATED = "revert_index_updated"
    REVERT_MADE = "revert_made"


def armed(environ: dict[str, str] | None = None) -> Step | None:
    """The step named by HEALBOT_FAULT; an unknown name is refused loudly rather than ignored."""
    value = (os.environ if environ is None else environ).get(ENV_VAR, "").strip()
    if not value:
        return None
    try:
        return Step(value)
    except ValueError:
        known = ", ".join(s.value for s in Step)
        raise ValueError(f"{ENV_VAR}={value!r} is not a step; known: {known}") from None


def hit(step: Step) -> None:
    """Called by the pipeline right after `step` is durable; dies here when the test armed this step."""
    if os.environ.get(ENV_VAR, "").strip() != step.value:
        return
    print(f"healbot: fault injected: SIGKILL at {step.value}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
