"""RestartHealer: approving a restart. No commit; the pipeline restarts the service after apply()."""

from __future__ import annotations

from collections.abc import Mapping

from bot.errors import HealerError, StaleProposalError
from bot.interfaces import HealContext
from bot.models import AppliedChange, Candidate, Fix, FixKind
from healers.base import compute_digest
from healers.git_repo import GitRepo, check_sha, stale_head


def bind_to_head(ctx: HealContext, candidate: Candidate, base_commit: str, params: Mapping[str, str]) -> None:
    """Fail closed like a patch: a restart runs whatever code HEAD holds, so HEAD must not have moved."""
    repo = GitRepo(ctx.repo)
    base = repo.resolve_commit(check_sha(base_commit))
    if base is None:
        raise StaleProposalError(f"base commit {base_commit} does not exist in {repo.root}")
    if compute_digest("", base, candidate.fix.kind, params) != candidate.digest:
        raise StaleProposalError("the proposal does not match its approved digest; the approval is void")
    head = repo.head()
    if head != base:
        raise stale_head(head, base)


def resolve_base(ctx: HealContext, base_commit: str) -> str:
    """The full sha of `base_commit`, so the digest does not depend on how it was abbreviated."""
    repo = GitRepo(ctx.repo)
    base = repo.resolve_commit(check_sha(base_commit))
    if base is None:
        raise HealerError(f"base commit {base_commit} does not exist in {repo.root}")
    return base


class RestartHealer:
    kind = FixKind.RESTART

    def params(self, ctx: HealContext) -> dict[str, str]:
        return {"service": ctx.service}

    def prepare(self, ctx: HealContext, fix: Fix, base_commit: str) -> Candidate:
        if fix.kind != FixKind.RESTART:
            raise HealerError(f"RestartHealer cannot prepare a {fix.kind.value} fix")
        base = resolve_base(ctx, base_commit)
        return Candidate(fix, "", compute_digest("", base, FixKind.RESTART, self.params(ctx)))

    def apply(
        self, ctx: HealContext, candidate: Candidate, base_commit: str, trailers: Mapping[str, str]
    ) -> AppliedChange:
        if candidate.fix.kind != FixKind.RESTART:
            raise HealerError(f"RestartHealer cannot apply a {candidate.fix.kind.value} fix")
        bind_to_head(ctx, candidate, base_commit, self.params(ctx))
        return AppliedChange(commit=None, detail=f"restart of {ctx.service} approved")

    def undo(self, ctx: HealContext, commit: str, trailers: Mapping[str, str]) -> str:
        raise HealerError("a restart changes no files; there is nothing to revert")
