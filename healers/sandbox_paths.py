"""What a sandboxed check may see of the host: the system dirs, a short /etc whitelist, its toolchain.

The toolchain is the installation of the check's argv[0], resolved on the bot's PATH: for a program in
a `bin` directory its prefix (a venv, /opt/node, a pyenv version), the prefix of the file it links to,
the base interpreter of a venv, and the interpreter of a script's `#!` line. Never "/", a top-level
system directory, HOME or one of its ancestors: then only the file itself is shown.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from bot.errors import HealerError

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")

# What a toolchain needs from /etc; never all of /etc (it holds /etc/healbot/env, shadow, ssh keys).
ETC_WHITELIST = (
    "/etc/alternatives",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/gai.conf",
    "/etc/group",
    "/etc/host.conf",
    "/etc/hosts",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/locale.alias",
    "/etc/localtime",
    "/etc/mime.types",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/protocols",
    "/etc/python3",
    "/etc/services",
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
    "/etc/timezone",
)

_TOO_BROAD = frozenset(
    {"/", "/etc", "/home", "/root", "/run", "/var", "/tmp", "/opt", "/srv", "/mnt", "/media", "/proc",
     "/sys", "/dev", "/boot"}
)  # fmt: skip
_SHEBANG_DEPTH = 2


def under(path: str, roots: Iterable[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def visible_by_default(path: str) -> bool:
    return under(path, SYSTEM_DIRS)


def resolve_program(argv0: str, search_path: str) -> str:
    """The file argv[0] names: absolute as given, a bare name on `search_path`. A relative path with a
    slash names a file in the checked tree and is returned unchanged."""
    if "/" in argv0 and not os.path.isabs(argv0):
        return argv0
    found = argv0 if os.path.isabs(argv0) else shutil.which(argv0, path=search_path)
    if found is None or not os.access(found, os.X_OK) or os.path.isdir(found):
        raise HealerError(f"command not found: {argv0}")
    return os.path.abspath(found)


def toolchain(program: str, search_path: str) -> list[str]:
    """The host paths (absolute, without duplicates) that `program` needs to run, system dirs aside."""
    if not os.path.isabs(program):
        return []
    found: list[str] = []
    _collect(Path(program), search_path, found, depth=0)
    return minimal(p for p in found if not visible_by_default(p))


def minimal(paths: Iterable[str]) -> list[str]:
    """Sorted, each path once, none inside another one of the list."""
    kept: list[str] = []
    for path in sorted(set(paths), key=lambda p: (p.count("/"), p)):
        if not under(path, kept):
            kept.append(path)
    return sorted(kept)


def visible_path_entries(search_path: str, shown: Sequence[str]) -> str:
    """The PATH the check gets: the bot's PATH entries that exist inside the sandbox."""
    entries = [e for e in search_path.split(os.pathsep) if e and os.path.isabs(e)]
    kept = [e for e in entries if visible_by_default(e) or under(e, shown)]
    return os.pathsep.join(dict.fromkeys([*kept, "/usr/local/bin", "/usr/bin", "/bin"]))


def _collect(program: Path, search_path: str, found: list[str], *, depth: int) -> None:
    found.append(_installation(program))
    real = program.resolve()
    found.append(_installation(real))
    venv_home = _venv_home(program)
    if venv_home is not None:
        found.append(_installation(venv_home / "python"))
    if depth < _SHEBANG_DEPTH:
        interpreter = _shebang_interpreter(real, search_path)
        if interpreter is not None:
            _collect(interpreter, search_path, found, depth=depth + 1)


def _installation(program: Path) -> str:
    """The directory that holds `program`'s installation, or the file alone when that is too broad."""
    directory = program.parent
    if directory.name in ("bin", "sbin"):
        directory = directory.parent
    text = str(directory)
    if text in _TOO_BROAD or _is_home_or_above(text):
        return str(program)
    return text


def _is_home_or_above(path: str) -> bool:
    home = os.environ.get("HOME", "")
    return bool(home) and home != "/" and under(os.path.realpath(home), [path])


def _venv_home(program: Path) -> Path | None:
    """A venv's base interpreter dir (`home` in pyvenv.cfg), when `program` is in a venv's bin."""
    config = program.parent.parent / "pyvenv.cfg"
    try:
        lines = config.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition("=")
        if key.strip() == "home" and os.path.isabs(value.strip()):
            return Path(value.strip())
    return None


def _shebang_interpreter(script: Path, search_path: str) -> Path | None:
    try:
        with script.open("rb") as handle:
            head = handle.read(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].decode("utf-8", errors="replace").split()
    if not words or not os.path.isabs(words[0]):
        return None
    if Path(words[0]).name == "env":
        names = [w for w in words[1:] if not w.startswith("-")]
        located = shutil.which(names[0], path=search_path) if names else None
        return Path(located) if located else None
    return Path(words[0])
