"""Run a service's check command on LLM-proposed code, before any human approved it, in a sandbox.

Proposed code is untrusted code. The check runs under bubblewrap (`bwrap`, Debian package bubblewrap)
rather than a hand-rolled `unshare` sequence: bwrap is one small, widely audited binary (Flatpak's
sandbox) that sets up the mount, pid, net, ipc, uts and user namespaces, builds a fresh root from
explicit binds, and ties the sandbox's life to its parent (`--die-with-parent`), all in one exec.

What the check gets:
- a plain copy of the scratch tree (no `.git`: the worktree's `.git` file points into the real repo,
  whose hooks and config later run unsandboxed) as its only writable host path; the copy is thrown away,
  so nothing it writes can reach the diff or the digest, which are computed before it runs;
- a private tmpfs /tmp of `sandbox.tmp_mb`; no network (its own loopback only); a fresh /proc and /dev;
- read-only: /usr and the /lib, /bin links, a short /etc whitelist (never /etc/healbot/env), the
  installation of argv[0] (see healers.sandbox_paths) and the service's `check_read_only_paths`;
  no HOME, no /root, no /run sockets, no state or config dir;
- an environment built from scratch (PATH, HOME=/tmp, TMPDIR, LANG);
- limits: the check timeout with a group kill, RLIMIT_AS, RLIMIT_NPROC, RLIMIT_FSIZE (set by
  `prlimit` inside the sandbox, so they count only the sandbox's own processes when healbot is not
  root), a pid namespace whose init is bwrap's: when the check exits, the kernel kills whatever it left.

Who it runs as: when healbot is root, bwrap itself runs as root without a user namespace (a user
namespace alone keeps kuid 0, which could still read root-owned files in the binds) only to set up the
mounts, then `setpriv` inside drops to `sandbox.user` (default nobody) with no capabilities, no
supplementary groups and no_new_privs before anything of the check runs. Dropping before bwrap is not
possible where the toolchain lives under a directory that user cannot traverse (a pyenv in /root).
When healbot is not root, its own uid in a fresh user namespace plus the mount namespace is the boundary.

Fail closed: where bwrap is missing or the sandbox cannot be set up (probed with `true` under the same
options), SandboxUnavailable is raised and the check does not run.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.errors import HealerError
from bot.interfaces import HealContext, SandboxSettings
from bot.proc import ProcResult
from healers.base import output_tail, run_command
from healers.sandbox_paths import (
    ETC_WHITELIST,
    SYSTEM_DIRS,
    minimal,
    resolve_program,
    toolchain,
    under,
    visible_path_entries,
)

PROBE_TIMEOUT_S = 30.0
INSTALL_HINT = "install bubblewrap (apt-get install bubblewrap), or set sandbox.bwrap to its path"
_MB = 1024 * 1024
_ROOT_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP")  # only what setpriv needs to drop to the user


class SandboxUnavailable(HealerError):
    """The sandbox cannot be set up here; the check must not run."""


@dataclass(frozen=True, slots=True)
class Identity:
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class Sandbox:
    """Everything needed to build the bwrap argv for one check run."""

    bwrap: str
    prlimit: str
    setpriv: str | None  # set when healbot is root: the check drops to `identity` inside
    identity: Identity | None
    settings: SandboxSettings
    read_only: tuple[str, ...]  # host paths shown read-only at the same place
    tree: Path  # the only writable host path
    path_env: str

    def argv(self, command: Sequence[str]) -> list[str]:
        args = [self.bwrap, *self._namespaces(), *self._filesystem()]
        args += ["--clearenv", "--chdir", str(self.tree)]
        for key, value in self._environment().items():
            args += ["--setenv", key, value]
        args.append("--")
        if self.setpriv is not None and self.identity is not None:
            args += [
                self.setpriv,
                f"--reuid={self.identity.uid}",
                f"--regid={self.identity.gid}",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--",
            ]
        settings = self.settings
        args += [
            self.prlimit,
            f"--as={settings.memory_mb * _MB}",
            f"--nproc={settings.max_processes}",
            f"--fsize={settings.max_file_mb * _MB}",
            "--core=0",
            "--",
            *command,
        ]
        return args

    def _namespaces(self) -> list[str]:
        args = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
        args += ["--die-with-parent", "--new-session", "--hostname", "healbot-check"]
        if self.setpriv is None:
            return ["--unshare-user", "--disable-userns", *args]
        for cap in _ROOT_CAPS:
            args += ["--cap-add", cap]
        return args

    def _filesystem(self) -> list[str]:
        args = ["--ro-bind", "/usr", "/usr"]
        for top in SYSTEM_DIRS[1:]:
            if os.path.islink(top):
                args += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                args += ["--ro-bind", top, top]
        args += ["--proc", "/proc", "--dev", "/dev"]
        args += ["--perms", "1777", "--size", str(self.settings.tmp_mb * _MB), "--tmpfs", "/tmp"]
        made: set[str] = set()
        for path in self.read_only:
            args += _parents(path, made)
            args += ["--ro-bind", path, path]
        args += _parents(str(self.tree), made)
        args += ["--bind", str(self.tree), str(self.tree), "--remount-ro", "/"]
        return args

    def _environment(self) -> dict[str, str]:
        return {"PATH": self.path_env, "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8"}


def run_check(ctx: HealContext, tree: Path) -> ProcResult:
    """Run ctx.check_command on a copy of `tree` in the sandbox. SandboxUnavailable: not run at all;
    HealerError: the command cannot be found. Exit status and timeout are in the result."""
    bwrap, prlimit, setpriv, identity = _host_tools(ctx.sandbox)
    search_path = os.environ.get("PATH", os.defpath)
    program = resolve_program(ctx.check_command[0], search_path)
    with scratch_copy(tree, identity) as copy:
        sandbox = _sandbox(ctx, copy, bwrap, prlimit, setpriv, identity, program, search_path)
        _probe(sandbox)
        return run_command(
            sandbox.argv([program, *ctx.check_command[1:]]),
            cwd=copy,
            timeout_s=ctx.check_timeout_s,
            env={"PATH": "/usr/bin:/bin"},
            merge_stderr=True,
        )


def sandbox_problem(ctx: HealContext) -> str | None:
    """For `healbot doctor`: None when ctx's check can run sandboxed, else what is wrong and the fix."""
    try:
        bwrap, prlimit, setpriv, identity = _host_tools(ctx.sandbox)
        search_path = os.environ.get("PATH", os.defpath)
        program = resolve_program(ctx.check_command[0], search_path) if ctx.check_command else "true"
        with (
            tempfile.TemporaryDirectory(prefix="healbot-doctor-") as empty,
            scratch_copy(Path(empty), identity) as copy,
        ):
            _probe(_sandbox(ctx, copy, bwrap, prlimit, setpriv, identity, program, search_path))
    except HealerError as exc:
        return str(exc)
    missing = [p for p in ctx.check_read_only_paths if not os.path.exists(p)]
    if missing:
        return f"check_read_only_paths: {', '.join(missing)} does not exist (fix the path or remove it)"
    return None


@contextlib.contextmanager
def scratch_copy(tree: Path, identity: Identity | None) -> Iterator[Path]:
    """A plain copy of `tree` without any `.git`, owned by the sandbox's user; always removed."""
    parent = Path(tempfile.mkdtemp(prefix="healbot-check-"))
    copy = parent / "tree"
    try:
        shutil.copytree(tree, copy, symlinks=True, ignore=shutil.ignore_patterns(".git"))
        if identity is not None:
            _chown_tree(copy, identity)
        yield copy
    finally:
        _make_removable(parent)
        shutil.rmtree(parent, ignore_errors=True)


def _host_tools(settings: SandboxSettings) -> tuple[str, str, str | None, Identity | None]:
    bwrap = _find_program(settings.bwrap)
    if bwrap is None:
        raise SandboxUnavailable(f"bwrap not found: {settings.bwrap!r} ({INSTALL_HINT})")
    prlimit = _find_program("prlimit")
    if prlimit is None or not under(prlimit, SYSTEM_DIRS):
        raise SandboxUnavailable("prlimit not found in /usr/bin (install util-linux)")
    if os.geteuid() != 0:
        return bwrap, prlimit, None, None
    setpriv = _find_program("setpriv")
    if setpriv is None or not under(setpriv, SYSTEM_DIRS):
        raise SandboxUnavailable("setpriv not found in /usr/bin (install util-linux)")
    return bwrap, prlimit, setpriv, _identity(settings.user)


def _find_program(name: str) -> str | None:
    if os.path.isabs(name):
        return name if os.access(name, os.X_OK) and not os.path.isdir(name) else None
    return shutil.which(name)


def _identity(user: str) -> Identity:
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, ValueError):
        if user.isdigit():
            return Identity(int(user), int(user))
        raise SandboxUnavailable(
            f"sandbox.user {user!r} does not exist (create it, or set sandbox.user to an unprivileged one)"
        ) from None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise SandboxUnavailable(f"sandbox.user {user!r} is root; the check must run unprivileged")
    return Identity(entry.pw_uid, entry.pw_gid)


def _sandbox(
    ctx: HealContext,
    copy: Path,
    bwrap: str,
    prlimit: str,
    setpriv: str | None,
    identity: Identity | None,
    program: str,
    search_path: str,
) -> Sandbox:
    etc = [path for path in ETC_WHITELIST if os.path.exists(path)]
    read_only = minimal([*etc, *toolchain(program, search_path), *ctx.check_read_only_paths])
    read_only = [p for p in read_only if os.path.exists(p) and not under(p, SYSTEM_DIRS)]
    return Sandbox(
        bwrap=bwrap,
        prlimit=prlimit,
        setpriv=setpriv,
        identity=identity,
        settings=ctx.sandbox,
        read_only=tuple(read_only),
        tree=copy,
        path_env=visible_path_entries(search_path, read_only),
    )


def _probe(sandbox: Sandbox) -> None:
    """`true` under the very options of the check: where that fails, the check must not run."""
    try:
        result = run_command(
            sandbox.argv(["true"]), cwd=sandbox.tree, timeout_s=PROBE_TIMEOUT_S, env={}, merge_stderr=True
        )
    except HealerError as exc:
        raise SandboxUnavailable(f"bwrap cannot start: {exc} ({INSTALL_HINT})") from None
    if not result.ok:
        why = output_tail(result.output, 3, 300) or f"exit {result.returncode}"
        raise SandboxUnavailable(f"bwrap cannot set up the sandbox here: {why}")


def _parents(path: str, made: set[str]) -> list[str]:
    """`--dir` for each missing parent of `path`, world-traversable (bwrap would make them 0700)."""
    args: list[str] = []
    parts = Path(path).parts[1:-1]
    for depth in range(1, len(parts) + 1):
        parent = "/" + "/".join(parts[:depth])
        if parent in made or under(parent, SYSTEM_DIRS) or parent == "/tmp":
            continue
        made.add(parent)
        args += ["--perms", "0755", "--dir", parent]
    return args


def _chown_tree(root: Path, identity: Identity) -> None:
    os.chown(root.parent, identity.uid, identity.gid)
    for directory, dirnames, filenames in os.walk(root):
        os.chown(directory, identity.uid, identity.gid)
        for name in (*dirnames, *filenames):
            os.chown(os.path.join(directory, name), identity.uid, identity.gid, follow_symlinks=False)


def _make_removable(root: Path) -> None:
    """A check may leave directories without write or search permission; the copy must still go."""
    for directory, dirnames, _ in os.walk(root):
        for name in dirnames:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                with contextlib.suppress(OSError):
                    os.chmod(path, 0o700)
