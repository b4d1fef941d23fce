"""The approval channel in a terminal, for `healbot demo` and local trials. Same interface as Telegram;
every line it prints passes bot.redact."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import TextIO

from bot.interfaces import DecisionHandler
from bot.models import Decision, DecisionAction, Incident, Proposal
from bot.redact import redacted
from bot.render import proposal_text

PROMPT = "approve which fix? [1-{n}] approve · r reject · d details · s skip > "


class ConsoleChannel:
    def __init__(
        self,
        *,
        out: TextIO | None = None,
        auto_approve: bool = False,
        interactive: bool = True,
        read_line: Callable[[str], str] = input,
        scrub: Callable[[str], str] = redacted,
        actor: str = "console",
    ) -> None:
        self._out = out or sys.stdout
        self._auto_approve = auto_approve
        self._interactive = interactive
        self._read_line = read_line
        self._scrub = scrub
        self._actor = actor
        self._decide: DecisionHandler | None = None

    def _print(self, text: str) -> None:
        self._out.write(redacted(self._scrub(text)) + "\n")
        self._out.flush()

    async def start(self, decide: DecisionHandler) -> None:
        self._decide = decide

    async def stop(self) -> None:
        self._decide = None

    async def present(self, incident: Incident, proposal: Proposal) -> None:
        self._print("\n" + proposal_text(incident, proposal, with_diffs=True))
        if self._decide is None:
            return
        if self._auto_approve:
            top = proposal.candidates[0]
            self._print(f"--yes: approving #{top.fix.rank} ({top.fix.title})")
            result = await self._decide(
                Decision(
                    proposal.token, f"{self._actor}:--yes", DecisionAction.APPROVE, top.fix.rank, top.digest
                )
            )
            self._print(f"  → {result.message}")
            return
        if self._interactive:
            await self._ask(incident, proposal)

    async def _ask(self, incident: Incident, proposal: Proposal) -> None:
        assert self._decide is not None
        n = len(proposal.candidates)
        while True:
            try:
                answer = (await asyncio.to_thread(self._read_line, PROMPT.format(n=n))).strip().lower()
            except EOFError:
                self._print("no input: the proposal stays open until it expires")
                return
            if answer == "d":
                self._print(proposal_text(incident, proposal, with_diffs=True))
                continue
            if answer == "s":
                self._print("skipped: the proposal stays open until it expires")
                return
            if answer == "r":
                decision = Decision(proposal.token, self._actor, DecisionAction.REJECT)
            elif answer.isdigit() and 1 <= int(answer) <= n:
                candidate = proposal.candidates[int(answer) - 1]
                decision = Decision(
                    proposal.token, self._actor, DecisionAction.APPROVE, candidate.fix.rank, candidate.digest
                )
            else:
                self._print(f"please answer 1-{n}, r, d or s")
                continue
            result = await self._decide(decision)
            self._print(f"  → {result.message}")
            return

    async def progress(self, incident: Incident, text: str) -> None:
        self._print(f"  #{incident.id} [{incident.service}] {text}")

    async def notify(self, text: str) -> None:
        self._print(f"healbot: {text}")

    async def remind(self, incident: Incident, proposal: Proposal, text: str) -> None:
        self._print(f"healbot: {text}")
