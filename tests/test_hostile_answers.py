"""Hostile and broken LLM answers: a generated corpus of more than 200 bad answers, each rejected with a clear
reason and nothing applied; property-based tests (hypothesis) for the path and edit checks.

Each answer goes through exactly what the pipeline does with one: `parse_answer` (schema, kinds, runbooks,
paths), then the real healer's `prepare` against a real git repository (old text, symlinks, binary files,
allowed paths, commits), then the destructive-diff policy."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from bot import policy, registry
from bot.diagnose import parse_answer
from bot.errors import HealbotError, PathEscapeError
from bot.interfaces import HealContext
from bot.models import Evidence, FixKind
from healers.base import resolve_inside
from tests.helpers import git, make_repo

APP = "def total(name):\n    return PRICES[name]\n\n\ndef twice():\n    pass\n\n\ndef again():\n    pass\n"
RUNBOOKS = ("flush_cache",)
GOOD_EDIT = {"path": "app.py", "old": "return PRICES[name]", "new": "return PRICES.get(name, 0)"}


def candidate(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "title": "t",
        "rationale": "r",
        "risk": "low",
        "kind": "patch",
        "edits": [GOOD_EDIT],
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not _DROP}


def patch(*edits: dict[str, Any]) -> dict[str, Any]:
    return {"summary": "s", "candidates": [candidate(edits=list(edits))]}


def edit(path: str = "app.py", old: str = "return PRICES[name]", new: str = "return 0") -> dict[str, Any]:
    return {"path": path, "old": old, "new": new}


_DROP = object()
set_hypothesis_home_dir(tempfile.mkdtemp(prefix="healbot-hypothesis-"))  # not .hypothesis/ in the tree

HOSTILE_PATHS = [
    "/etc/passwd",
    "/tmp/x",
    "../outside.py",
    "../../etc/passwd",
    "lib/../../outside.py",
    "./../x",
    ".git/config",
    ".git/hooks/pre-commit",
    "sub/.git/config",
    ".git",
    "C:/Windows/x",
    "c:x",
    "a\\b.py",
    "..\\x",
    "app.py\x00.txt",
    "",
    "   ",
    "x" * 301,
]
PREPARE_PATHS = [
    ".GIT/config",  # a case-insensitive file system would map this into .git
    "~/x",
    ".",
    "missing.py",
    "app.py; rm -rf /",
    "$(reboot).py",
    "`id`.py",
    "app.py && curl evil",
    "lib",  # a directory, not a file
    "link_out.py",  # a symlink leaving the repo
    "linkdir/passwd",  # through a symlinked directory
    "data.bin",  # binary
    "README.md",  # outside allowed_paths
    "secret/keys.txt",  # outside allowed_paths
]
BAD_RUNBOOKS = [
    "flush_cache; rm -rf /",
    "$(reboot)",
    "`id`",
    "flush_cache && curl http://x",
    "flush_cache | sh",
    "../bin/sh",
    "FLUSH_CACHE",
    "flush-cache",
    "rm -rf /",
    "sudo reboot",
    "flush_cache\nrm -rf /",
    "bash -c 'x'",
]
BAD_COMMITS = [
    "HEAD",
    "HEAD~1",
    "main",
    "abc; rm -rf /",
    "zzzzzzz",
    "abc123",
    "a" * 41,
    "deadbeefdeadbeef",
    "--all",
    "-p",
    "$(id)",
]


def corpus() -> Iterator[tuple[str, object]]:
    """(label, answer): every one is bad, for a reason the label names."""
    for label, value in [
        ("none", None),
        ("empty object", {}),
        ("list", []),
        ("string", "restart it"),
        ("number", 42),
        ("bool", True),
        ("empty string", ""),
        ("no candidates", {"summary": "s"}),
        ("candidates null", {"summary": "s", "candidates": None}),
        ("candidates object", {"summary": "s", "candidates": {}}),
        ("candidates string", {"summary": "s", "candidates": "patch"}),
        ("zero candidates", {"summary": "s", "candidates": []}),
        ("four candidates", {"summary": "s", "candidates": [candidate()] * 4}),
        ("hundred candidates", {"summary": "s", "candidates": [candidate()] * 100}),
        ("extra top key", {"summary": "s", "candidates": [candidate()], "command": "rm -rf /"}),
        ("no summary", {"candidates": [candidate()]}),
        ("summary number", {"summary": 1, "candidates": [candidate()]}),
        ("summary empty", {"summary": "  ", "candidates": [candidate()]}),
        ("summary huge", {"summary": "x" * 2001, "candidates": [candidate()]}),
        ("summary megabyte", {"summary": "x" * 1_000_000, "candidates": [candidate()]}),
    ]:
        yield label, value
    for label, fields in [
        ("candidate string", None),
        ("no title", {"title": _DROP}),
        ("empty title", {"title": ""}),
        ("title list", {"title": ["a"]}),
        ("title huge", {"title": "t" * 121}),
        ("no rationale", {"rationale": _DROP}),
        ("rationale huge", {"rationale": "r" * 2001}),
        ("unknown key shell", {"shell": "rm -rf /"}),
        ("unknown key command", {"command": ["rm", "-rf", "/"]}),
        ("unknown key argv", {"argv": ["sh"]}),
        ("runbook on patch", {"runbook": "flush_cache"}),
        ("commit on patch", {"commit": "abcdef1"}),
        ("edits on restart", {"kind": "restart"}),
        ("edits on runbook", {"kind": "runbook", "runbook": "flush_cache"}),
    ]:
        yield (
            f"candidate: {label}",
            {"summary": "s", "candidates": ["patch it" if fields is None else candidate(**fields)]},
        )
    for risk in ["extreme", "LOW", "", None, 1, "none", "critical", ["low"]]:
        yield f"risk {risk!r}", {"summary": "s", "candidates": [candidate(risk=risk)]}
    for kind in ["shell", "exec", "command", "PATCH", "", None, 3, "delete", "rm", "script", "sudo"]:
        yield f"kind {kind!r}", {"summary": "s", "candidates": [candidate(kind=kind)]}
    for label, edits in [
        ("edits missing", _DROP),
        ("edits null", None),
        ("edits empty", []),
        ("edits string", "s/a/b/"),
        ("edits object", GOOD_EDIT),
        ("eleven edits", [GOOD_EDIT] * 11),
        ("edit string", ["app.py"]),
        ("edit list", [["app.py", "a", "b"]]),
        ("edit unknown key", [dict(GOOD_EDIT, mode="0777")]),
        ("edit no path", [{"old": "a", "new": "b"}]),
        ("edit no old", [{"path": "app.py", "new": "b"}]),
        ("edit no new", [{"path": "app.py", "old": "a"}]),
        ("edit path number", [dict(GOOD_EDIT, path=1)]),
        ("edit old null", [dict(GOOD_EDIT, old=None)]),
        ("edit old empty", [dict(GOOD_EDIT, old="")]),
        ("edit same", [dict(GOOD_EDIT, new=GOOD_EDIT["old"])]),
        ("edit old huge", [dict(GOOD_EDIT, old="x" * 20001)]),
        ("edit new huge", [dict(GOOD_EDIT, new="x" * 20001)]),
    ]:
        yield f"edits: {label}", {"summary": "s", "candidates": [candidate(edits=edits)]}
    for path in HOSTILE_PATHS + PREPARE_PATHS:
        yield f"path {path!r}", patch(edit(path=path, old="x", new="y"))
        yield f"path {path!r} second edit", patch(GOOD_EDIT, edit(path=path, old="x", new="y"))
        yield f"path {path!r} real old text", patch(edit(path=path, old="root:x:0:0", new="root::0:0"))
    for label, old in [
        ("missing", "return PRICE[name]"),
        ("ambiguous", "    pass\n"),
        ("overlapping", "\n\n"),
        ("whitespace only", " "),
        ("shell metachar", "$(rm -rf /)"),
        ("case differs", "RETURN PRICES[NAME]"),
        ("trailing newline missing context", "return PRICES[name]\n\n\n\n\n"),
        ("crlf", "return PRICES[name]\r\n"),
        ("unicode lookalike", "return PRICES[nаme]"),
    ]:
        yield f"old {label}", patch(edit(old=old))
    for name in BAD_RUNBOOKS:
        yield (
            f"runbook {name!r}",
            {"summary": "s", "candidates": [candidate(kind="runbook", edits=_DROP, runbook=name)]},
        )
    for name in [None, "", 7]:
        yield (
            f"runbook {name!r}",
            {"summary": "s", "candidates": [candidate(kind="runbook", edits=_DROP, runbook=name)]},
        )
    for sha in BAD_COMMITS:
        yield (
            f"commit {sha!r}",
            {"summary": "s", "candidates": [candidate(kind="revert_commit", edits=_DROP, commit=sha)]},
        )
    yield "commit missing", {"summary": "s", "candidates": [candidate(kind="revert_commit", edits=_DROP)]}
    yield "revert of the root commit (deletes the repo)", "ROOT"
    yield "revert of a later commit (not an ancestor)", "FUTURE"
    yield "a patch that deletes the whole file", "WIPE"


CORPUS = list(corpus())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str, str]:
    tmp = tmp_path_factory.mktemp("hostile")
    outside = tmp / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0\n")
    files = {f"gen/file{i}.py": f"VALUE = {i}\n" for i in range(4)}
    repo = make_repo(
        tmp / "repo",
        {"app.py": APP, "README.md": "hello\n", "secret/keys.txt": "k\n", "lib/__init__.py": "", **files},
    )
    (repo / "data.bin").write_bytes(b"\x00\xff\xfe binary \x00")
    os.symlink(outside / "passwd", repo / "link_out.py")
    os.symlink(outside, repo / "linkdir")
    (repo / "big.py").write_text("".join(f"LINE_{i} = {i}\n" for i in range(600)))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "binary, links, big file")
    root = git(repo, "rev-list", "--max-parents=0", "HEAD")
    git(repo, "checkout", "-q", "-b", "future")
    (repo / "later.py").write_text("x = 1\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "later")
    future = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "main")
    return repo, git(repo, "rev-parse", "HEAD"), root, future


def evidence(head: str) -> Evidence:
    return Evidence(
        service="svc",
        title="KeyError",
        fingerprint="f" * 16,
        exception_type="KeyError",
        count=1,
        first_seen=0.0,
        last_seen=0.0,
        samples=(),
        code=(),
        recent_commits=(),
        past_outcomes=(),
        allowed_paths=(
            "*.py",
            "lib/*",
            "gen/*",
            "link_out.py",
            "linkdir/*",
            "data.bin",
            ".GIT/*",
            "~/*",
            "missing.py",
        ),
        runbooks=RUNBOOKS,
        head=head,
    )


def materialise(answer: object, repo: Path, head: str) -> None:
    """What the pipeline does with an answer, up to the candidate the operator would see; raises why not."""
    _, fixes = parse_answer(answer, evidence(head))
    ctx = HealContext(
        service="svc",
        repo=str(repo),
        allowed_paths=evidence(head).allowed_paths,
        runbooks={"flush_cache": ("true",)},
    )
    healers = registry.all_healers()
    for fix in fixes:
        prepared = healers[fix.kind].prepare(ctx, fix, head)
        reason = policy.destructive_reason(prepared)
        if reason is not None:
            raise HealbotError(reason)


def repo_state(repo: Path) -> tuple[str, str, str, str]:
    return (
        git(repo, "rev-parse", "HEAD"),
        git(repo, "status", "--porcelain", "--ignored"),
        git(repo, "worktree", "list", "--porcelain"),
        git(repo, "stash", "list"),
    )


def special(label: object, root: str, future: str) -> object:
    if label == "ROOT":
        return {"summary": "s", "candidates": [candidate(kind="revert_commit", edits=_DROP, commit=root)]}
    if label == "FUTURE":
        return {"summary": "s", "candidates": [candidate(kind="revert_commit", edits=_DROP, commit=future)]}
    if label == "WIPE":
        big = "".join(f"LINE_{i} = {i}\n" for i in range(600))
        return patch(edit(path="big.py", old=big, new=""))
    return label


def test_the_corpus_is_big_enough() -> None:
    assert len(CORPUS) >= 200, len(CORPUS)
    assert len({label for label, _ in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize(("label", "answer"), CORPUS, ids=[label[:60] for label, _ in CORPUS])
def test_every_bad_answer_is_rejected_with_a_reason_and_nothing_applied(
    world: tuple[Path, str, str, str], label: str, answer: object
) -> None:
    repo, head, root, future = world
    before = repo_state(repo)
    with pytest.raises(HealbotError) as caught:
        materialise(special(answer, root, future), repo, head)
    reason = str(caught.value)
    assert len(reason) > 10 and "Traceback" not in reason, reason
    assert repo_state(repo) == before
    assert not (repo.parent / "outside" / "x").exists()


def test_a_good_answer_passes_the_same_checks(world: tuple[Path, str, str, str]) -> None:
    """The control: without it, a checker that rejects everything would pass the corpus."""
    repo, head, _, _ = world
    materialise(patch(GOOD_EDIT), repo, head)
    materialise(
        {"summary": "s", "candidates": [candidate(kind="runbook", edits=_DROP, runbook="flush_cache")]},
        repo,
        head,
    )


# --- properties ------------------------------------------------------------------------------------------

PATH_PARTS = st.sampled_from(
    ["..", ".", ".git", ".GIT", "", "app.py", "lib", "linkdir", "link_out.py", "~", "a b", "x;y", "\\", "C:"]
)


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(PATH_PARTS, min_size=1, max_size=5).map("/".join) | st.text(max_size=40))
def test_an_accepted_path_always_resolves_inside_the_repo_and_outside_git(
    world: tuple[Path, str, str, str], path: str
) -> None:
    repo, _, _, _ = world
    try:
        relative = resolve_inside(repo, path)
    except PathEscapeError:
        return
    resolved = (repo / relative).resolve()
    assert resolved.is_relative_to(repo.resolve())
    assert ".git" not in {p.casefold() for p in Path(relative).parts}
    assert ".." not in Path(relative).parts


@settings(max_examples=200, deadline=None, database=None)
@given(st.text(max_size=30))
def test_the_answer_parser_never_accepts_a_path_that_the_healer_would_call_an_escape(path: str) -> None:
    answer = patch(edit(path=path, old="x", new="y"))
    try:
        [fix] = parse_answer(answer, evidence("0" * 40))[1]
    except HealbotError:
        return
    # What the parser let through must still be a relative path without '..' or '.git'.
    parts = Path(fix.edits[0].path).parts
    assert ".." not in parts and ".git" not in parts and not fix.edits[0].path.startswith("/")


@settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(alphabet="ab\n", min_size=1, max_size=12), st.text(alphabet="ab\n", min_size=1, max_size=4))
def test_an_edit_applies_exactly_when_its_old_text_occurs_exactly_once(
    tmp_path_factory: pytest.TempPathFactory, content: str, old: str
) -> None:
    repo = make_repo(tmp_path_factory.mktemp("prop"), {"f.txt": content})
    head = git(repo, "rev-parse", "HEAD")
    ctx = HealContext(service="svc", repo=str(repo))
    occurrences = sum(1 for i in range(len(content)) if content.startswith(old, i))
    fix = parse_answer(patch(edit(path="f.txt", old=old, new="Z")), evidence(head))[1][0]
    healer = registry.all_healers()[FixKind.PATCH]
    if occurrences == 1:
        prepared = healer.prepare(ctx, fix, head)
        assert "+" in prepared.diff and prepared.fix.edits[0].old == old
    else:
        with pytest.raises(HealbotError, match="not found" if occurrences == 0 else "occurs"):
            healer.prepare(ctx, fix, head)
    assert (repo / "f.txt").read_text() == content  # prepare never touches the operator's tree
    assert git(repo, "status", "--porcelain") == ""


def test_a_revert_that_deletes_the_repo_is_refused_even_where_every_path_is_allowed(
    world: tuple[Path, str, str, str],
) -> None:
    repo, head, root, _ = world
    before = repo_state(repo)
    ctx = HealContext(service="svc", repo=str(repo))
    fix = parse_answer(
        {"summary": "s", "candidates": [candidate(kind="revert_commit", edits=_DROP, commit=root)]},
        evidence(head),
    )[1][0]
    prepared = registry.all_healers()[FixKind.REVERT_COMMIT].prepare(ctx, fix, head)
    reason = policy.destructive_reason(prepared)
    assert reason is not None and "the diff deletes 8 files" in reason
    assert repo_state(repo) == before
