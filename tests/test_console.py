"""The console approval channel as an operator uses it: typed answers, the exact diff on screen."""

from __future__ import annotations

import io
from collections.abc import Iterator

from bot.console import ConsoleChannel
from bot.models import (
    Candidate,
    Decision,
    DecisionAction,
    DecisionResult,
    DiffStats,
    Edit,
    Fix,
    FixKind,
    Incident,
    IncidentState,
    Proposal,
    ProposalStatus,
    Risk,
)

DIFF = "--- a/app.py\n+++ b/app.py\n@@ -1 +1 @@\n-    return PRICES[name]\n+    return PRICES.get(name, 0)\n"


def incident() -> Incident:
    return Incident(
        7,
        "shop",
        "abc",
        "KeyError: '<str>'",
        IncidentState.AWAITING_APPROVAL,
        1.0,
        2.0,
        3,
        ("Traceback (most recent call last):\nKeyError: 'pear'",),
    )


def proposal() -> Proposal:
    patch = Fix(1, "Default to 0", "unknown items", Risk.LOW, FixKind.PATCH, (Edit("app.py", "a", "b"),))
    restart = Fix(2, "Restart", "clears state", Risk.MEDIUM, FixKind.RESTART)
    return Proposal(
        3,
        7,
        "tok-123",
        "b" * 40,
        (Candidate(patch, DIFF, "d1" * 32, DiffStats(1, 1, 1), True), Candidate(restart, "", "d2" * 32)),
        1.0,
        3601.0,
        ProposalStatus.PENDING,
        "the summary",
    )


class Operator:
    def __init__(self, answers: list[str]) -> None:
        self.answers: Iterator[str] = iter(answers)
        self.prompts: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        try:
            return next(self.answers)
        except StopIteration:
            raise EOFError from None


async def run_console(answers: list[str], **kwargs: object) -> tuple[str, list[Decision], Operator]:
    out = io.StringIO()
    decisions: list[Decision] = []

    async def decide(decision: Decision) -> DecisionResult:
        decisions.append(decision)
        return DecisionResult(True, f"{decision.action.value} #{decision.rank}")

    operator = Operator(answers)
    channel = ConsoleChannel(out=out, read_line=operator, **kwargs)  # type: ignore[arg-type]
    await channel.start(decide)
    await channel.present(incident(), proposal())
    return out.getvalue(), decisions, operator


async def test_the_card_shows_candidates_and_the_exact_diff() -> None:
    text, _, _ = await run_console(["s"])
    assert "incident #7 [shop] KeyError" in text
    assert "#1 [low risk] Default to 0 (1 file(s) +1 -1 · check passed)" in text
    assert "#2 [medium risk] Restart (restart)" in text
    assert "+    return PRICES.get(name, 0)" in text
    assert "skipped: the proposal stays open" in text


async def test_details_then_approve_the_second_candidate_with_its_digest() -> None:
    text, decisions, operator = await run_console(["d", "9", "2"])
    assert decisions == [Decision("tok-123", "console", DecisionAction.APPROVE, 2, "d2" * 32)]
    assert "please answer 1-2, r, d or s" in text
    assert len(operator.prompts) == 3
    assert "→ approve #2" in text


async def test_reject_and_end_of_input() -> None:
    _, decisions, _ = await run_console(["r"])
    assert decisions == [Decision("tok-123", "console", DecisionAction.REJECT)]
    text, decisions, _ = await run_console([])
    assert decisions == [] and "no input" in text


async def test_yes_approves_the_top_candidate_without_asking() -> None:
    text, decisions, operator = await run_console([], auto_approve=True)
    assert decisions == [Decision("tok-123", "console:--yes", DecisionAction.APPROVE, 1, "d1" * 32)]
    assert operator.prompts == []
    assert "--yes: approving #1" in text


async def test_non_interactive_only_shows() -> None:
    _, decisions, operator = await run_console(["1"], interactive=False)
    assert decisions == [] and operator.prompts == []


async def test_secrets_are_scrubbed_from_what_is_printed() -> None:
    text, _, _ = await run_console(["s"], scrub=lambda s: s.replace("pear", "[REDACTED]"))
    assert "pear" not in text and "[REDACTED]" in text
