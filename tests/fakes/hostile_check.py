"""Hostile check commands: a proposed patch whose code tries one escape when the check runs it.

Shared by tests/test_check_sandbox*.py. Every process a check starts carries a marker word in its argv,
so what it left behind can be found on the host (and killed by the test that started it).
"""

from __future__ import annotations

import os
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from bot.interfaces import HealContext, SandboxSettings
from bot.models import Candidate, Edit, Fix, FixKind, Risk
from healers.patch import PatchHealer
from tests.helpers import git, make_repo

PLACEHOLDER = 'print("nothing to see")\n'
NOBODY = 65534


def bwrap_binary() -> str:
    """CI runs `make test`, whose `tools` step fetches bwrap: missing here is a failure, never a skip."""
    path = os.environ.get("HEALBOT_BWRAP_BIN", "")
    if not path or not os.access(path, os.X_OK):
        pytest.fail(f"HEALBOT_BWRAP_BIN={path!r} is not an executable bwrap; run `make tools`")
    return path


def marked_processes(word: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if word.encode() in cmdline and int(entry) != os.getpid():
            found.append(int(entry))
    return found


class _suppress_gone:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: object, tb: object) -> bool:
        return isinstance(exc, ProcessLookupError)


def context(repo: Path, marker: str, **options: object) -> HealContext:
    ctx = HealContext(
        service="svc",
        repo=str(repo),
        check_command=(sys.executable, "check_me.py", marker),
        check_timeout_s=60.0,
        sandbox=SandboxSettings(bwrap=bwrap_binary(), max_processes=64),
    )
    return replace(ctx, **options)  # type: ignore[arg-type]


def hostile(code: str) -> Fix:
    body = textwrap.dedent(code).strip() + "\n"
    return Fix(
        rank=1,
        title="Harmless-looking fix",
        rationale="trust me",
        risk=Risk.LOW,
        kind=FixKind.PATCH,
        edits=(Edit("check_me.py", PLACEHOLDER, body),),
    )


def propose(repo: Path, ctx: HealContext, fix: Fix) -> Candidate:
    return PatchHealer().prepare(ctx, fix, git(repo, "rev-parse", "HEAD"))


def attempt(statement: str) -> str:
    """Code that tries `statement` and prints what happened, never failing the check by itself."""
    return (
        "try:\n"
        f"    {statement}\n"
        "    print('ESCAPED', flush=True)\n"
        "except Exception as exc:\n"
        "    print('contained:', type(exc).__name__, exc, flush=True)\n"
    )


def check_repo(root: Path) -> Path:
    """A service repo with a module, its test, and check_me.py, the file hostile patches rewrite."""
    return make_repo(
        root / "svc",
        {
            "app/main.py": "def total(items):\n    return sum(items)\n",
            "check_me.py": f"# the check runs this file\n{PLACEHOLDER}",
            "tests/test_main.py": "from app.main import total\n\n\ndef test_total():\n    assert total([]) == 0\n",
            "app/__init__.py": "",
        },
    )


def kill_marked(word: str) -> None:
    for pid in marked_processes(word):  # only ever processes the calling test started
        with _suppress_gone():
            os.kill(pid, 9)


FORK_BOMB = """
import os, sys, time
read_end, write_end = os.pipe()
made = 0
while made < 1000:
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        os.close(write_end)
        os.read(read_end, 1)  # until the bomb's parent is gone
        os._exit(0)
    made += 1
print('forked', made, flush=True)
"""


OUTLIVER = """
import subprocess, sys
subprocess.Popen(['setsid', 'sh', '-c', 'sleep 300; echo late > {late}', sys.argv[1]])
subprocess.Popen(['sh', '-c', 'trap "" HUP TERM; sleep 300', sys.argv[1]], start_new_session=True)
print('left two processes behind', flush=True)
"""


@pytest.fixture(name="repo")
def repo_fixture(tmp_path: Path) -> Path:
    return check_repo(tmp_path)


@pytest.fixture(name="marker")
def marker_fixture() -> Iterator[str]:
    """A unique argv word: every process a check starts carries it, so leftovers can be found."""
    word = f"healbot-sandbox-marker-{uuid.uuid4().hex}"
    yield word
    kill_marked(word)
