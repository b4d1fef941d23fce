"""Every piece of Telegram text and every keyboard, built here: redacted, HTML-escaped and never over
4096 chars. Every variable text (titles, samples, summaries, fix titles, rationales, diffs, check output,
progress lines, notifications, answers) passes `bot.redact` here before it is clipped and escaped, so a
secret is never cut in two where no rule would recognise it.

Button `callback_data` is an opaque, short string for a stored proposal (or change) and an action,
decoded by an exact, case-sensitive match: a token that differs in one letter is a different token.
"""

from __future__ import annotations

import enum
import html
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from telegram import BotCommand, InlineKeyboardButton, InlineKeyboardMarkup

from bot import invisible
from bot.models import (
    Candidate,
    Change,
    Incident,
    Proposal,
    ProposalStatus,
    StatusKind,
    StatusLine,
)
from bot.operations import HistoryEntry, StatusSummary
from bot.policy import SNOOZE_S, awaits_decision
from bot.redact import MARK, redact, redacted
from bot.render import check_result, hour_minute, shorten_middle

MAX_TEXT = 4096
MAX_ANSWER = 200
MAX_CALLBACK_BYTES = 64
STATUS_RESERVE = 1400  # room kept free on a card for progress lines added by later edits
MAX_STATUS_LINES = 6  # the verdict among them, always
MAX_STATUS_LINE = 200  # shortened in the middle: a line's point is at its end
SAMPLE_LINES = 12
DIGEST_PREFIX = 12

COMMANDS: tuple[tuple[str, str], ...] = (
    ("diagnose", "diagnose a service now (read-only): /diagnose <service>"),
    ("status", "services, open incidents, pending approvals, paused or not"),
    ("incidents", "open incidents"),
    ("history", "recent changes with verdicts: /history [service]"),
    ("revert", "revert a healbot change: /revert <change>"),
    ("pause", "kill switch: nothing proposed or applied: /pause [duration]"),
    ("resume", "lift the pause"),
    ("mute", "stop diagnosing a fingerprint: /mute <fingerprint> [duration]"),
    ("newsession", "the service's next diagnosis starts a fresh Claude session: /newsession <service>"),
    ("help", "what healbot can do here"),
)


class CardAction(enum.StrEnum):
    APPROVE = "a"
    REJECT = "r"
    DETAILS = "d"
    SNOOZE = "s"
    DIAGNOSE = "g"  # diagnose again after a revert
    REVERT = "v"  # confirm a /revert, or revert a change whose verdict asks for a decision
    CANCEL = "c"  # cancel a /revert
    KEEP = "k"  # keep a change whose verdict asks for a decision


@dataclass(frozen=True, slots=True)
class Callback:
    """A decoded button press."""

    action: CardAction
    proposal_token: str = ""
    rank: int | None = None
    digest_prefix: str = ""
    change_id: int | None = None


_TOKEN = r"[A-Za-z0-9_-]{1,32}"  # noqa: S105 (a pattern for proposal tokens)
_APPROVE = re.compile(rf"a([1-9]):({_TOKEN}):([0-9a-f]{{{DIGEST_PREFIX}}})")
_SIMPLE = re.compile(rf"([rdsg]):({_TOKEN})")
_CHANGE = re.compile(r"([vck]):([0-9]{1,12})")


def approve_data(proposal: Proposal, candidate: Candidate) -> str:
    return f"a{candidate.fix.rank}:{proposal.token}:{candidate.digest[:DIGEST_PREFIX]}"


def proposal_data(action: CardAction, proposal: Proposal) -> str:
    return f"{action.value}:{proposal.token}"


def change_data(action: CardAction, change_id: int) -> str:
    return f"{action.value}:{change_id}"


def decode_callback(data: str | None) -> Callback | None:
    """The exact inverse of the encoders above; anything else (case changed, truncated, padded) is None."""
    if data is None or len(data.encode("utf-8")) > MAX_CALLBACK_BYTES:
        return None
    if match := _APPROVE.fullmatch(data):
        return Callback(CardAction.APPROVE, match.group(2), int(match.group(1)), match.group(3))
    if match := _SIMPLE.fullmatch(data):
        return Callback(CardAction(match.group(1)), match.group(2))
    if match := _CHANGE.fullmatch(data):
        return Callback(CardAction(match.group(1)), change_id=int(match.group(2)))
    return None


# --- helpers ---------------------------------------------------------------------------------------


def esc(text: str) -> str:
    """Text for a card: HTML-escaped, and every invisible or bidirectional character made visible."""
    return html.escape(invisible.mark(text), quote=False)


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def until_text(until: float) -> str:
    return "until /resume" if math.isinf(until) else f"until {when(until)}"


def fit(text: str, limit: int = MAX_TEXT) -> str:
    """Last-resort guard for free-form text that is escaped already: cut at a line, close nothing open."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 2]
    cut = cut[: cut.rfind("\n")] if "\n" in cut else re.sub(r"&[#A-Za-z0-9]*$", "", cut)
    return _drop_open_tags(cut) + "\n…"


def _drop_open_tags(text: str) -> str:
    for tag in ("pre", "code", "b", "i"):
        while text.count(f"<{tag}") > text.count(f"</{tag}>"):
            text = text[: text.rfind(f"<{tag}")]
    return text


def pre(text: str) -> str:
    return f"<pre>{esc(text)}</pre>"


# --- the incident card -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Card:
    text: str
    keyboard: InlineKeyboardMarkup | None


def diff_stats(candidate: Candidate) -> str:
    stats = candidate.stats
    if candidate.diff:
        return f"{stats.files} file(s) +{stats.added} −{stats.removed}"
    if candidate.fix.runbook:
        return f"runbook {candidate.fix.runbook}"
    return candidate.fix.kind.value


def _candidate_block(candidate: Candidate, *, with_diff: bool, rationale_limit: int) -> str:
    fix = candidate.fix
    check = esc(redact(check_result(candidate)).text)
    lines = [
        f"<b>#{fix.rank}</b> [{esc(fix.risk.value)} risk] {esc(clip(redacted(fix.title), 200))} "
        f"({esc(diff_stats(candidate))}{check})",
        f"<i>why:</i> {esc(clip(redacted(fix.rationale), rationale_limit))}",
    ]
    hidden = invisible.in_fix(candidate.diff, fix.title, fix.rationale)
    if hidden:
        lines.append(f"<b>{esc(invisible.warning(hidden))}</b>")
    if with_diff and candidate.diff:
        lines.append(pre(redact(candidate.diff).text.rstrip("\n")))
    return "\n".join(lines)


def _sample(incident: Incident, max_lines: int, max_chars: int) -> str:
    if not incident.samples or max_lines <= 0:
        return ""
    lines = redacted(incident.samples[0]).splitlines()[-max_lines:]
    return pre(clip("\n".join(lines), max_chars))


StatusItem = str | StatusLine


def _as_line(item: StatusItem) -> StatusLine:
    return item if isinstance(item, StatusLine) else StatusLine(item)


def shown_status(status: Sequence[StatusItem]) -> list[StatusLine]:
    """The newest MAX_STATUS_LINES lines, with the latest verdict kept among them however many lines
    (refusals, later steps) came after it."""
    lines = [_as_line(item) for item in status]
    verdicts = [i for i, line in enumerate(lines) if line.kind is StatusKind.VERDICT]
    first_shown = max(0, len(lines) - MAX_STATUS_LINES)
    if verdicts and verdicts[-1] < first_shown:
        return [lines[verdicts[-1]], *lines[first_shown + 1 :]]
    return lines[first_shown:]


def _status_text(line: StatusLine) -> str:
    text = redacted(line.text)
    if line.kind is StatusKind.REFUSAL and line.repeats > 1:
        return f"{shorten_middle(text, MAX_STATUS_LINE - 24)} (refused {line.repeats}×)"
    return shorten_middle(text, MAX_STATUS_LINE)


def _status_block(status: Sequence[StatusItem]) -> str:
    shown = shown_status(status)
    if not shown:
        return ""
    rendered = [
        f"→ <b>{esc(_status_text(line))}</b>"
        if line.kind is StatusKind.VERDICT
        else f"→ {esc(_status_text(line))}"
        for line in shown
    ]
    return "<b>status</b>\n" + "\n".join(rendered)


def redacted_count(incident: Incident, proposal: Proposal) -> int:
    """Secret values kept out of this card: already replaced in stored text, or replaced in diffs here."""
    stored = [*incident.samples, incident.title, proposal.summary]
    stored += [c.fix.title + "\n" + c.fix.rationale for c in proposal.candidates]
    return sum(text.count(MARK) + redact(text).count for text in stored) + sum(
        redact(c.diff).count for c in proposal.candidates
    )


def _card_text(
    incident: Incident,
    proposal: Proposal,
    status: Sequence[StatusItem],
    *,
    with_diffs: bool,
    sample_lines: int,
    sample_chars: int,
    text_limit: int,
    host: str = "",
) -> str:
    header = (
        f"<b>#{incident.id} {esc(incident.service)}</b>{_on_host(host)}: {esc(clip(redacted(incident.title), 300))}\n"
        f"fingerprint <code>{esc(incident.fingerprint)}</code> · seen {incident.count}×{_redacted_note(incident, proposal)}\n"
        f"first {when(incident.first_seen)} · last {when(incident.last_seen)}"
    )
    parts = [header, _sample(incident, sample_lines, sample_chars)]
    if proposal.summary:
        parts.append(f"<b>diagnosis</b>: {esc(clip(redacted(proposal.summary), text_limit))}")
    for candidate in proposal.candidates:
        parts.append(_candidate_block(candidate, with_diff=with_diffs, rationale_limit=text_limit))
    if not with_diffs and any(c.diff for c in proposal.candidates):
        parts.append(f"full diff attached: {esc(diff_filename(incident, proposal))}")
    parts.append(
        f"base <code>{esc(proposal.base_commit[:12])}</code> · expires {when(proposal.expires_at)}"
        f"{_snoozed_note(proposal)}"
    )
    parts.append(_status_block(status))
    return "\n\n".join(p for p in parts if p)


def _snoozed_note(proposal: Proposal) -> str:
    if proposal.snoozed_until is None or proposal.status is not ProposalStatus.PENDING:
        return ""
    return f" · snoozed until {hour_minute(proposal.snoozed_until)}"


def _on_host(host: str) -> str:
    """Several servers in one chat: every card says which host it is about."""
    return f" on <b>{esc(clip(host, 64))}</b>" if host else ""


def _redacted_note(incident: Incident, proposal: Proposal) -> str:
    count = redacted_count(incident, proposal)
    return f" · {count} secret value(s) redacted" if count else ""


def diffs_fit(incident: Incident, proposal: Proposal, *, host: str = "") -> bool:
    """Whether the diffs go inline: decided once per card, with room kept for later progress lines."""
    text = _card_text(
        incident,
        proposal,
        (),
        with_diffs=True,
        sample_lines=SAMPLE_LINES,
        sample_chars=1500,
        text_limit=600,
        host=host,
    )
    return len(text) + STATUS_RESERVE <= MAX_TEXT


def card_text(
    incident: Incident,
    proposal: Proposal,
    status: Sequence[StatusItem],
    *,
    diffs_inline: bool,
    host: str = "",
) -> str:
    """The card, shrunk step by step (sample, then rationale) until it fits in one message."""
    attempts = [(SAMPLE_LINES, 1500, 600), (8, 800, 300), (4, 400, 200), (0, 0, 120), (0, 0, 40)]
    text = ""
    for lines, chars, limit in attempts:
        text = _card_text(
            incident,
            proposal,
            status,
            with_diffs=diffs_inline,
            sample_lines=lines,
            sample_chars=chars,
            text_limit=limit,
            host=host,
        )
        if len(text) <= MAX_TEXT:
            return text
    return fit(text)


def card_keyboard(proposal: Proposal, change: Change | None = None) -> InlineKeyboardMarkup | None:
    """Approve, Reject, Details and Snooze while pending; afterwards Keep and Revert while the change's
    verdict waits for a person (`change`: the proposal's change, if one was made)."""
    if proposal.status is not ProposalStatus.PENDING:
        return decision_keyboard(change) if change is not None else None
    approve_row = [
        InlineKeyboardButton(f"Approve #{c.fix.rank}", callback_data=approve_data(proposal, c))
        for c in proposal.candidates[:3]
    ]
    rest = [
        InlineKeyboardButton("Reject", callback_data=proposal_data(CardAction.REJECT, proposal)),
        InlineKeyboardButton("Details", callback_data=proposal_data(CardAction.DETAILS, proposal)),
        InlineKeyboardButton(
            f"Snooze {SNOOZE_S / 3600:g} h", callback_data=proposal_data(CardAction.SNOOZE, proposal)
        ),
    ]
    return InlineKeyboardMarkup([approve_row, rest] if approve_row else [rest])


def diagnose_again_keyboard(proposal: Proposal) -> InlineKeyboardMarkup:
    data = proposal_data(CardAction.DIAGNOSE, proposal)
    return InlineKeyboardMarkup([[InlineKeyboardButton("Diagnose again", callback_data=data)]])


def decision_keyboard(change: Change) -> InlineKeyboardMarkup | None:
    if not awaits_decision(change):
        return None
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("Keep", callback_data=change_data(CardAction.KEEP, change.id)),
                InlineKeyboardButton("Revert", callback_data=change_data(CardAction.REVERT, change.id)),
            ]
        ]
    )


def build_card(
    incident: Incident,
    proposal: Proposal,
    status: Sequence[StatusItem],
    *,
    diffs_inline: bool,
    host: str = "",
    change: Change | None = None,
    diagnose_again: bool = False,
) -> Card:
    keyboard = card_keyboard(proposal, change) or (
        diagnose_again_keyboard(proposal) if diagnose_again else None
    )
    return Card(card_text(incident, proposal, status, diffs_inline=diffs_inline, host=host), keyboard)


def diff_filename(incident: Incident, proposal: Proposal) -> str:
    return f"incident-{incident.id}-{proposal.token[:8]}.diff"


def diff_document(proposal: Proposal) -> bytes:
    """Every candidate's exact diff in one file; the headers are diff comments, so `git apply` reads it
    (unless it holds hidden characters: those are shown as ⟦U+…⟧ under a warning, as on the card)."""
    chunks = []
    for candidate in proposal.candidates:
        if candidate.diff:
            shown = redact(candidate.diff).text  # code context may hold secrets: shown redacted
            hidden = invisible.in_fix(candidate.diff, candidate.fix.title)
            note = f"# {invisible.warning(hidden)}\n" if hidden else ""
            chunks.append(
                f"# candidate #{candidate.fix.rank}: {invisible.mark(redacted(candidate.fix.title))}\n{note}"
                f"{invisible.mark(shown)}"
            )
    return "\n".join(chunks).encode("utf-8")


def diff_caption(incident: Incident, proposal: Proposal) -> str:
    return fit(
        f"diffs for #{incident.id} {esc(incident.service)} ({len(proposal.candidates)} candidate(s))", 1024
    )


def details_text(incident: Incident, proposal: Proposal) -> str | None:
    """Everything about the candidates, diffs included; None when it does not fit (send the document)."""
    parts = [f"<b>details of #{incident.id} {esc(incident.service)}</b>"]
    for candidate in proposal.candidates:
        parts.append(_candidate_block(candidate, with_diff=True, rationale_limit=2000))
        parts.append(f"digest <code>{esc(candidate.digest[:16])}</code>")
        if candidate.check_output:
            parts.append("check output:\n" + pre(clip(redact(candidate.check_output).text, 600)))
    text = "\n\n".join(parts)
    return text if len(text) <= MAX_TEXT else None


# --- short texts -----------------------------------------------------------------------------------


def answer(text: str) -> str:
    """Callback-query answers are plain text of at most 200 characters."""
    return clip(redacted(text), MAX_ANSWER)


def plain(text: str) -> str:
    """A line of plain words (already redacted by the caller), as a message."""
    return fit(esc(redacted(text)) or "(empty)")


def notification(text: str, host: str = "") -> str:
    return fit(f"healbot{'@' + esc(host) if host else ''}: {esc(redacted(text))}")


def address_hint(command: str, username: str, host: str) -> str:
    """An unaddressed command that changes things, in a chat with several healbots."""
    return esc(
        f"several healbots share this chat: to {command} on {host}, send /{command}@{username}"
        if host
        else f"several healbots share this chat: send /{command}@{username}"
    )


def usage(line: str) -> str:
    """The reply to a refused command: a usage hint says "usage:" itself; a plain error is not one."""
    return esc(line)


def help_text() -> str:
    lines = ["<b>healbot</b>: fixes are proposed on cards; press Approve to apply exactly the diff shown."]
    lines += [f"/{name} — {esc(description)}" for name, description in COMMANDS]
    lines.append("Reply to a card with a question to ask about that incident (read-only).")
    return "\n".join(lines)


def bot_commands() -> list[BotCommand]:
    return [BotCommand(name, clip(description, 256)) for name, description in COMMANDS]


def status_text(summary: StatusSummary, *, host: str = "", scans: Sequence[str] = ()) -> str:
    """`scans`: the heartbeat, one line per source (bot.heartbeat.scan_lines)."""
    state = f"PAUSED {until_text(summary.paused_until)}" if summary.paused_until is not None else "active"
    lines = [
        f"<b>healbot</b>{_on_host(host)}: {esc(state)} · runner {esc(summary.runner)}",
        f"open incidents {summary.open_incidents} · pending approvals {summary.pending_approvals}",
    ]
    for service in summary.services:
        problem = (
            f" · {esc(clip(redacted('; '.join(service.source_problems)), 200))}"
            if service.source_problems
            else ""
        )
        lines.append(f"• {esc(service.name)}: {service.open_incidents} open{problem}")
    for fingerprint, until in summary.muted:
        lines.append(f"muted <code>{esc(fingerprint)}</code> {esc(until_text(until))}")
    if scans:
        lines.append("<b>heartbeat</b>")
        lines += [f"· {esc(clip(redacted(line), 300))}" for line in scans]
    return fit("\n".join(lines))


def incidents_text(incidents: Sequence[Incident]) -> str:
    if not incidents:
        return "no open incidents"
    lines = ["<b>open incidents</b>"]
    for i in incidents:
        lines.append(
            f"#{i.id} {esc(i.service)} [{esc(i.state.value)}] {esc(clip(redacted(i.title), 120))} · {i.count}× · "
            f"<code>{esc(i.fingerprint)}</code>"
        )
    return fit("\n".join(lines))


def history_text(entries: Sequence[HistoryEntry]) -> str:
    if not entries:
        return "no changes yet"
    lines = ["<b>recent changes</b>"]
    for entry in entries:
        change = entry.change
        verdict = entry.verdict.value if entry.verdict else "no verdict"
        commit = (change.commit or "-")[:10]
        lines.append(
            f"change {change.id} · #{change.incident_id} {esc(change.service)} {esc(change.kind.value)} "
            f"<code>{esc(commit)}</code> → {esc(change.status.value)} ({esc(verdict)}) by {esc(change.approved_by)}"
        )
    return fit("\n".join(lines))


def revert_confirm(change: Change) -> Card:
    commit = (change.commit or "")[:10]
    text = (
        f"revert change {change.id} (#{change.incident_id} {esc(change.service)}, commit "
        f"<code>{esc(commit)}</code>) and restart {esc(change.service)}?"
    )
    keyboard = InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("Revert", callback_data=change_data(CardAction.REVERT, change.id)),
                InlineKeyboardButton("Cancel", callback_data=change_data(CardAction.CANCEL, change.id)),
            ]
        ]
    )
    return Card(text, keyboard)


def followup_text(question: str, answer_text: str) -> str:
    return fit(f"<i>{esc(clip(redacted(question), 300))}</i>\n\n{esc(redacted(answer_text))}")
