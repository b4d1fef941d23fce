"""Code changes as commits: PatchHealer (search/replace edits) and RevertCommitHealer (undo a commit).

prepare() materialises the change in a scratch worktree at the base commit and returns the exact diff
and its digest; apply() commits exactly that diff, once, under the repo lock, only if HEAD is still the
base and the digest still matches; undo() reverts exactly that commit. Both are plan() / plan_undo()
(the commit built out of sight) then land() (work tree and index, the ref last), so the pipeline can
record the planned commit in between and a restart can finish exactly that landing. Nothing is stashed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from bot.errors import HealerError, PatchError, StaleProposalError
from bot.interfaces import HealContext
from bot.models import AppliedChange, Candidate, DiffStats, Edit, Fix, FixKind
from healers.base import (
    check_allowed,
    check_relative_path,
    compute_digest,
    output_tail,
    resolve_inside,
)
from healers.git_repo import DEFAULT_LOCK_TIMEOUT_S, GitRepo, check_sha, commit_message, first_lines, short
from healers.sandbox import SandboxUnavailable, run_check, sandbox_problem

__all__ = ["PatchHealer", "RevertCommitHealer", "compute_digest"]

DIGEST_TRAILER = "Healbot-Digest"
logger = logging.getLogger(__name__)


class _CommitHealer:
    """What the two commit-making healers share: digest binding, apply under the lock, undo."""

    kind: FixKind

    def __init__(self, *, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> None:
        self.lock_timeout_s = lock_timeout_s

    def params(self, ctx: HealContext, fix: Fix) -> dict[str, str]:
        return {"service": ctx.service}

    def message_body(self, fix: Fix) -> str:
        return first_lines(fix.rationale)

    def preflight(self, ctx: HealContext, candidate: Candidate) -> None:
        """Before an approval is taken: DirtyTreeError when operator work in progress would block the
        apply, so the proposal can stay open instead of being used up by a refusal."""
        if candidate.diff:
            repo = GitRepo(ctx.repo)
            repo.ensure_clean(repo.paths_in_diff(candidate.diff))

    def plan(
        self, ctx: HealContext, candidate: Candidate, base_commit: str, trailers: Mapping[str, str]
    ) -> str:
        """The commit of exactly `candidate`, built without touching the operator's tree or refs."""
        repo, base, message = self._checked(ctx, candidate, base_commit, trailers)
        with repo.lock(self.lock_timeout_s):
            return repo.plan_apply(candidate.diff, base, message)

    def _checked(
        self, ctx: HealContext, candidate: Candidate, base_commit: str, trailers: Mapping[str, str]
    ) -> tuple[GitRepo, str, str]:
        """The repo, the base and the commit message, once the candidate is known to be the approved one."""
        if candidate.fix.kind != self.kind:
            raise HealerError(f"{type(self).__name__} cannot apply a {candidate.fix.kind.value} fix")
        repo = GitRepo(ctx.repo)
        base = _resolve_base(repo, base_commit, stale=True)
        expected = compute_digest(candidate.diff, base, self.kind, self.params(ctx, candidate.fix))
        if expected != candidate.digest:
            raise StaleProposalError("the diff does not match its approved digest; the approval is void")
        for path in repo.paths_in_diff(candidate.diff):
            _guard_diff_path(repo.root, path, ctx.allowed_paths)
        message = commit_message(
            f"healbot: {candidate.fix.title}",
            self.message_body(candidate.fix),
            {**trailers, DIGEST_TRAILER: candidate.digest},
        )
        return repo, base, message

    def plan_undo(self, ctx: HealContext, commit: str, trailers: Mapping[str, str]) -> str:
        """The commit reverting exactly `commit`, built without touching the operator's tree or refs."""
        repo = GitRepo(ctx.repo)
        with repo.lock(self.lock_timeout_s):
            return repo.plan_revert(commit, trailers)

    def land(self, ctx: HealContext, commit: str, checkpoint: Callable[[str], None] | None = None) -> str:
        """Make a planned commit the checked-out state (ref last), or finish one a kill interrupted."""
        repo = GitRepo(ctx.repo)
        with repo.lock(self.lock_timeout_s):
            sha = repo.land(commit, checkpoint)
        logger.info("landed %s on %s", short(sha), ctx.service)
        return sha

    def apply(
        self, ctx: HealContext, candidate: Candidate, base_commit: str, trailers: Mapping[str, str]
    ) -> AppliedChange:
        repo, base, message = self._checked(ctx, candidate, base_commit, trailers)
        with repo.lock(self.lock_timeout_s):
            sha = repo.apply_and_commit(candidate.diff, base, message)
        logger.info("committed %s on %s: %s", short(sha), ctx.service, candidate.fix.title)
        stats = candidate.stats
        return AppliedChange(
            commit=sha,
            detail=f"committed {short(sha)}: {stats.files} file(s), +{stats.added} -{stats.removed}",
        )

    def sandbox_problem(self, ctx: HealContext) -> str | None:
        return sandbox_problem(ctx)

    def undo(self, ctx: HealContext, commit: str, trailers: Mapping[str, str]) -> str:
        repo = GitRepo(ctx.repo)
        with repo.lock(self.lock_timeout_s):
            revert = repo.revert(commit, trailers)
        logger.info("reverted %s on %s as %s", short(commit), ctx.service, short(revert))
        return revert

    def finish(
        self, ctx: HealContext, fix: Fix, base: str, tree: Path, repo: GitRepo, diff: str
    ) -> Candidate:
        """Shared tail of prepare(): guard the touched paths, measure, digest, then run the check.

        The diff and its digest are fixed before the check runs; the check runs on a throwaway copy of
        `tree` in the sandbox, so nothing it writes can become part of what the operator approves."""
        if not diff.strip():
            raise PatchError("the fix changes nothing")
        rows = repo.numstat(diff)
        for _, _, path in rows:
            _guard_diff_path(tree, path, ctx.allowed_paths)
        stats = DiffStats(files=len(rows), added=sum(r[0] for r in rows), removed=sum(r[1] for r in rows))
        digest = compute_digest(diff, base, self.kind, self.params(ctx, fix))
        check_passed, check_output = _run_check(ctx, tree)
        return Candidate(fix, diff, digest, stats, check_passed, check_output)


class PatchHealer(_CommitHealer):
    """Search/replace edits; each `old` must occur exactly once in its file."""

    kind = FixKind.PATCH

    def prepare(self, ctx: HealContext, fix: Fix, base_commit: str) -> Candidate:
        if fix.kind != FixKind.PATCH:
            raise HealerError(f"PatchHealer cannot prepare a {fix.kind.value} fix")
        if not fix.edits:
            raise PatchError("a patch needs at least one edit")
        for edit in fix.edits:
            check_relative_path(edit.path)
        repo = GitRepo(ctx.repo)
        base = _resolve_base(repo, base_commit, stale=False)
        with repo.worktree(base) as tree:
            for number, edit in enumerate(fix.edits, 1):
                _apply_edit(tree, edit, f"edit {number} of {len(fix.edits)}", ctx.allowed_paths, base)
            return self.finish(ctx, fix, base, tree, repo, repo.diff(tree))


class RevertCommitHealer(_CommitHealer):
    """Revert `fix.commit`, which must be in the history of the base commit."""

    kind = FixKind.REVERT_COMMIT

    def params(self, ctx: HealContext, fix: Fix) -> dict[str, str]:
        return {"service": ctx.service, "commit": (fix.commit or "").lower()}

    def message_body(self, fix: Fix) -> str:
        return f"This reverts commit {fix.commit}.\n\n{first_lines(fix.rationale)}".strip()

    def prepare(self, ctx: HealContext, fix: Fix, base_commit: str) -> Candidate:
        if fix.kind != FixKind.REVERT_COMMIT:
            raise HealerError(f"RevertCommitHealer cannot prepare a {fix.kind.value} fix")
        if not fix.commit:
            raise PatchError("a revert_commit fix must name the commit to revert")
        repo = GitRepo(ctx.repo)
        base = _resolve_base(repo, base_commit, stale=False)
        target = repo.resolve_commit(check_sha(fix.commit))
        if target is None:
            raise PatchError(f"commit {fix.commit} does not exist in {repo.root}")
        if not repo.is_ancestor(target, base):
            raise PatchError(f"commit {short(target)} is not in the history of {short(base)}")
        if len(repo.parents(target)) > 1:
            raise PatchError(f"commit {short(target)} is a merge; healbot does not revert merges")
        with repo.worktree(base) as tree:
            result = repo.run("revert", "--no-commit", "--no-edit", target, cwd=tree, check=False)
            if not result.ok:
                raise PatchError(
                    f"reverting {short(target)} conflicts with later changes at {short(base)}: "
                    f"{output_tail(result.output, 10, 1500)}"
                )
            return self.finish(ctx, fix, base, tree, repo, repo.diff(tree, cached=True))


def _resolve_base(repo: GitRepo, base_commit: str, *, stale: bool) -> str:
    base = repo.resolve_commit(check_sha(base_commit))
    if base is None:
        message = f"base commit {base_commit} does not exist in {repo.root}"
        raise StaleProposalError(message) if stale else PatchError(message)
    return base


def _guard_diff_path(tree: Path, path: str, allowed_paths: Sequence[str]) -> None:
    """Whatever produced a diff, every path it touches must be a plain repo path we may change."""
    check_allowed(resolve_inside(tree, path), allowed_paths, written_as=path)


def _apply_edit(tree: Path, edit: Edit, label: str, allowed_paths: Sequence[str], base: str) -> None:
    relative = resolve_inside(tree, edit.path)
    check_allowed(relative, allowed_paths, written_as=edit.path)
    target = tree / relative
    if not target.is_file():
        raise PatchError(f"{label}: {edit.path} is not a file at {short(base)}")
    if not edit.old:
        raise PatchError(f"{label}: old text is empty for {edit.path}")
    if edit.old == edit.new:
        raise PatchError(f"{label}: old and new text are the same in {edit.path}; the edit changes nothing")
    try:
        content = target.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise PatchError(f"{label}: {edit.path} is not UTF-8 text") from None
    occurrences = _count_occurrences(content, edit.old)
    if occurrences == 0:
        raise PatchError(f"{label}: old text not found in {edit.path}")
    if occurrences > 1:
        raise PatchError(f"{label}: old text occurs {occurrences} times in {edit.path}")
    target.write_bytes(content.replace(edit.old, edit.new, 1).encode("utf-8"))


def _count_occurrences(text: str, needle: str) -> int:
    """Occurrences including overlapping ones: "aa" occurs twice in "aaa"."""
    count, start = 0, text.find(needle)
    while start != -1:
        count += 1
        start = text.find(needle, start + 1)
    return count


def _run_check(ctx: HealContext, tree: Path) -> tuple[bool | None, str]:
    """(True, output tail) when the check passed; (None, why) when it was not run; PatchError else."""
    if not ctx.check_command:
        return None, ""
    shown = " ".join(ctx.check_command)
    try:
        result = run_check(ctx, tree)
    except SandboxUnavailable as exc:
        logger.warning("%s: check not run, sandbox unavailable: %s", ctx.service, exc)
        return None, f"check not run: sandbox unavailable: {exc}"
    except HealerError as exc:
        raise PatchError(f"check command `{shown}` could not run: {exc}") from exc
    tail = output_tail(result.output)
    if result.timed_out:
        raise PatchError(f"check command `{shown}` timed out after {ctx.check_timeout_s:g}s:\n{tail}")
    if result.returncode != 0:
        raise PatchError(f"check command `{shown}` failed (exit {result.returncode}):\n{tail}")
    return True, tail
