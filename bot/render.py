"""Plain-text views of incidents, proposals and candidates for the terminal (and the basis for cards)."""

from __future__ import annotations

import time

from bot import invisible
from bot.models import Candidate, Incident, Proposal


def when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def hour_minute(ts: float) -> str:
    return time.strftime("%H:%M", time.localtime(ts))


def shorten_middle(text: str, limit: int) -> str:
    """At most `limit` characters, the cut in the middle: a status line's point is at its end ("…; revert
    with /revert 3"), its subject at its start."""
    if len(text) <= limit:
        return text
    head = max(0, (limit - 1) * 2 // 5)
    tail = max(0, limit - 1 - head)
    return text[:head] + "…" + (text[-tail:] if tail else "")


def incident_header(incident: Incident) -> str:
    return (
        f"incident #{incident.id} [{incident.service}] {incident.title}\n"
        f"  fingerprint {incident.fingerprint} · seen {incident.count}× · "
        f"first {when(incident.first_seen)} · last {when(incident.last_seen)}"
    )


def sample_block(incident: Incident, max_lines: int = 12) -> str:
    if not incident.samples:
        return ""
    lines = incident.samples[0].splitlines()
    shown = lines[-max_lines:]
    more = f"  … {len(lines) - len(shown)} earlier lines\n" if len(lines) > len(shown) else ""
    return more + "\n".join(f"  | {line}" for line in shown)


def check_result(candidate: Candidate) -> str:
    """ " · check passed", " · check FAILED", " · check not run: why" (the check_output then), or ""."""
    if candidate.check_passed is not None:
        return " · check passed" if candidate.check_passed else " · check FAILED"
    note = candidate.check_output.strip().splitlines()[:1]
    return f" · {note[0][:160]}" if note else ""


def candidate_line(candidate: Candidate) -> str:
    fix = candidate.fix
    stats = candidate.stats
    change = f"{stats.files} file(s) +{stats.added} -{stats.removed}" if candidate.diff else fix.kind.value
    check = check_result(candidate)
    return f"#{fix.rank} [{fix.risk.value} risk] {fix.title} ({change}{check})"


def proposal_text(incident: Incident, proposal: Proposal, *, with_diffs: bool = True) -> str:
    parts = [incident_header(incident), sample_block(incident)]
    if proposal.summary:
        parts.append(f"diagnosis: {proposal.summary}")
    parts.append(f"base commit {proposal.base_commit[:12]} · expires {when(proposal.expires_at)}")
    for candidate in proposal.candidates:
        parts.append(candidate_line(candidate))
        hidden = invisible.in_fix(candidate.diff, candidate.fix.title, candidate.fix.rationale)
        if hidden:
            parts.append(f"   {invisible.warning(hidden)}")
        parts.append(f"   why: {candidate.fix.rationale}")
        if with_diffs and candidate.diff:
            parts.append("\n".join(f"   {line}" for line in candidate.diff.rstrip("\n").splitlines()))
        if candidate.fix.runbook:
            parts.append(f"   runs the configured runbook {candidate.fix.runbook!r}")
    return invisible.mark("\n".join(p for p in parts if p))
