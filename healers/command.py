"""RunbookHealer: run a command the operator configured (ctx.runbooks), chosen by name. No commit.

The argv comes only from the config, never from LLM text; the digest covers it, so a runbook edited
after the proposal voids the approval. Runs with the bot's environment minus its secrets, cwd = repo,
in its own process group, killed as a group after ctx.check_timeout_s.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from bot.errors import HealerError
from bot.interfaces import HealContext
from bot.models import AppliedChange, Candidate, Fix, FixKind
from healers.base import child_env, compute_digest, output_tail, run_command
from healers.git_repo import DEFAULT_LOCK_TIMEOUT_S, GitRepo
from healers.restart import bind_to_head, resolve_base


class RunbookHealer:
    kind = FixKind.RUNBOOK

    def __init__(self, *, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> None:
        self.lock_timeout_s = lock_timeout_s

    def argv(self, ctx: HealContext, fix: Fix) -> tuple[str, ...]:
        if fix.kind != FixKind.RUNBOOK:
            raise HealerError(f"RunbookHealer cannot handle a {fix.kind.value} fix")
        if not fix.runbook:
            raise HealerError("a runbook fix must name a runbook")
        argv = ctx.runbooks.get(fix.runbook)
        if argv is None:
            known = ", ".join(sorted(ctx.runbooks)) or "none"
            raise HealerError(f"unknown runbook {fix.runbook!r} for {ctx.service} (configured: {known})")
        if not argv:
            raise HealerError(f"runbook {fix.runbook!r} has an empty command")
        return tuple(argv)

    def params(self, ctx: HealContext, fix: Fix) -> dict[str, str]:
        return {
            "service": ctx.service,
            "runbook": fix.runbook or "",
            "argv": json.dumps(list(self.argv(ctx, fix))),
        }

    def prepare(self, ctx: HealContext, fix: Fix, base_commit: str) -> Candidate:
        params = self.params(ctx, fix)
        digest = compute_digest("", resolve_base(ctx, base_commit), FixKind.RUNBOOK, params)
        return Candidate(fix, "", digest)

    def apply(
        self, ctx: HealContext, candidate: Candidate, base_commit: str, trailers: Mapping[str, str]
    ) -> AppliedChange:
        argv = self.argv(ctx, candidate.fix)
        repo = GitRepo(ctx.repo)
        with repo.lock(self.lock_timeout_s):
            bind_to_head(ctx, candidate, base_commit, self.params(ctx, candidate.fix))
            result = run_command(
                argv, cwd=repo.root, timeout_s=ctx.check_timeout_s, env=child_env(), merge_stderr=True
            )
        tail = output_tail(result.output)
        name = candidate.fix.runbook
        if result.timed_out:
            raise HealerError(f"runbook {name!r} timed out after {ctx.check_timeout_s:g}s:\n{tail}")
        if result.returncode != 0:
            raise HealerError(f"runbook {name!r} failed (exit {result.returncode}):\n{tail}")
        return AppliedChange(commit=None, detail=f"runbook {name!r} succeeded:\n{tail}".rstrip())

    def undo(self, ctx: HealContext, commit: str, trailers: Mapping[str, str]) -> str:
        raise HealerError("a runbook makes no commit; there is nothing to revert")
