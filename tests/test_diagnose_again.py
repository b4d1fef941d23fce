"""The Diagnose again button of a card whose fix was reverted (issue 17.4): offered only on a decided card
when asked, encoded and decoded exactly."""

from __future__ import annotations

import time

from bot.models import (
    Candidate,
    DiffStats,
    Fix,
    FixKind,
    Incident,
    IncidentState,
    Proposal,
    ProposalStatus,
    Risk,
)
from bot.telegram import cards


def card_of(status: ProposalStatus) -> tuple[Incident, Proposal]:
    now = time.time()
    incident = Incident(1, "svc", "3f2a9c1b", "KeyError", IncidentState.REVERTED, now, now, 3, ("x",))
    fix = Fix(1, "fix", "because", Risk.LOW, FixKind.PATCH)
    candidate = Candidate(fix, "--- a/app.py\n+++ b/app.py\n-x\n+y\n", "ab" * 32, DiffStats(1, 1, 1))
    proposal = Proposal(7, 1, "Tok_en-1", "c0ffee" * 6, (candidate,), now, now + 60, status, "summary")
    return incident, proposal


def test_the_diagnose_again_button_is_offered_only_once_decided_and_decodes_exactly() -> None:
    incident, decided = card_of(ProposalStatus.APPROVED)
    card = cards.build_card(incident, decided, [], diffs_inline=True, diagnose_again=True)
    assert card.keyboard is not None
    [[button]] = card.keyboard.inline_keyboard
    assert (button.text, button.callback_data) == ("Diagnose again", "g:Tok_en-1")
    assert cards.decode_callback("g:Tok_en-1") == cards.Callback(cards.CardAction.DIAGNOSE, "Tok_en-1")
    assert cards.decode_callback("G:Tok_en-1") is None
    assert cards.build_card(incident, decided, [], diffs_inline=True).keyboard is None

    _, pending = card_of(ProposalStatus.PENDING)
    live = cards.build_card(incident, pending, [], diffs_inline=True, diagnose_again=True)
    assert live.keyboard is not None and "Diagnose again" not in str(live.keyboard.to_dict())
