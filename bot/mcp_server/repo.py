"""The repository, read-only and confined: list, read (a line range), search, git log / show / blame.

A path is relative to the repository; `..`, absolute paths, anything under `.git/`, and a symlink that
leads out of the repository are refused, as are binary files and files over MAX_FILE_BYTES. git runs with
no hooks, no external diff or textconv drivers and no fsmonitor, so the repo's own config cannot make it
run a program.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from bot import gitinfo
from bot.errors import GitError
from bot.mcp_server.refused import ToolRefused

MAX_FILE_BYTES = 1024 * 1024
BINARY_SNIFF_BYTES = 8192
MAX_LIST_ENTRIES = 400
MAX_SEARCH_FILES = 5000
MAX_LINE_CHARS = 400
SEARCH_LINE_CHARS = 4000  # of each line a pattern is tried on: bounds a pathological pattern's time
_REV = re.compile(r"(?:[0-9a-fA-F]{4,40}|HEAD)(?:~\d{1,4}|\^{1,4})?")
_NO_PROGRAMS = ("-c", "core.fsmonitor=false", "-c", "diff.external=", "-c", "core.pager=cat")


class Repo:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    # --- paths ---------------------------------------------------------------------------------------

    def resolve(self, path: str, *, want_dir: bool = False) -> Path:
        """The real path of `path` inside the repository, or ToolRefused saying why not."""
        text = path.strip() or "."
        if "\x00" in text or "\\" in text:
            raise ToolRefused(f"{path!r} is not a plain relative path with / separators")
        pure = PurePosixPath(text)
        if pure.is_absolute():
            raise ToolRefused(f"{path!r} is absolute; give a path relative to the repository")
        if ".." in pure.parts:
            raise ToolRefused(f"{path!r} contains '..'; paths must stay inside the repository")
        if ".git" in pure.parts:
            raise ToolRefused(f"{path!r} is inside .git/, git's own files are not served")
        target = (self.root / pure).resolve()
        if target != self.root and self.root not in target.parents:
            raise ToolRefused(f"{path!r} is a symlink (or under one) that leads out of the repository")
        if ".git" in target.relative_to(self.root).parts:
            raise ToolRefused(f"{path!r} leads into git's own files, which are not served")
        if not target.exists():
            raise ToolRefused(f"{path!r} does not exist in the repository")
        if want_dir and not target.is_dir():
            raise ToolRefused(f"{path!r} is a file, not a directory")
        if not want_dir and not target.is_file():
            raise ToolRefused(f"{path!r} is not a regular file")
        return target

    def relative(self, target: Path) -> str:
        return target.relative_to(self.root).as_posix() or "."

    def text_of(self, target: Path, shown: str) -> str:
        size = target.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ToolRefused(
                f"{shown} is {size / 1048576:.1f} MB; files over {MAX_FILE_BYTES // 1024} KB are refused"
            )
        data = target.read_bytes()
        if b"\x00" in data[:BINARY_SNIFF_BYTES]:
            raise ToolRefused(f"{shown} is a binary file; only text files are served")
        return data.decode("utf-8", errors="replace")

    # --- the tools -----------------------------------------------------------------------------------

    def list_dir(self, path: str = "", depth: int = 1) -> str:
        base = self.resolve(path, want_dir=True)
        rows: list[str] = []
        for entry, level in self._walk(base, depth):
            if len(rows) >= MAX_LIST_ENTRIES:
                rows.append(f"[… more entries cut at {MAX_LIST_ENTRIES}]")
                break
            indent = "  " * level
            if entry.is_symlink():
                rows.append(f"{indent}{entry.name} -> (symlink)")
            elif entry.is_dir():
                rows.append(f"{indent}{entry.name}/")
            else:
                rows.append(f"{indent}{entry.name} ({entry.stat().st_size} bytes)")
        return f"{self.relative(base)}:\n" + ("\n".join(rows) if rows else "(empty)")

    def _walk(self, base: Path, depth: int, level: int = 0) -> Iterator[tuple[Path, int]]:
        try:
            entries = sorted(base.iterdir(), key=lambda p: p.name)
        except OSError:
            return
        for entry in entries:
            if entry.name == ".git":
                continue
            yield entry, level
            if entry.is_dir() and not entry.is_symlink() and level + 1 < depth:
                yield from self._walk(entry, depth, level + 1)

    def read_file(self, path: str, start_line: int = 1, end_line: int | None = None) -> str:
        target = self.resolve(path)
        shown = self.relative(target)
        lines = self.text_of(target, shown).splitlines()
        last = len(lines) if end_line is None else min(end_line, len(lines))
        if start_line > max(len(lines), 1):
            raise ToolRefused(f"{shown} has {len(lines)} lines; line {start_line} does not exist")
        if last < start_line:
            raise ToolRefused(f"end_line {end_line} is before start_line {start_line}")
        body = "\n".join(f"{n:>5}  {lines[n - 1]}" for n in range(start_line, last + 1))
        return f"{shown} lines {start_line}-{last} of {len(lines)}:\n{body}"

    def search(self, pattern: str, path: str = "", max_results: int = 50) -> str:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ToolRefused(f"pattern {pattern!r} is not a valid regular expression: {exc}") from None
        base = self.resolve(path, want_dir=True) if path.strip() else self.root
        hits: list[str] = []
        scanned = 0
        for file in self._files(base):
            scanned += 1
            if scanned > MAX_SEARCH_FILES or len(hits) >= max_results:
                break
            try:
                if file.stat().st_size > MAX_FILE_BYTES:
                    continue
                data = file.read_bytes()
            except OSError:
                continue
            if b"\x00" in data[:BINARY_SNIFF_BYTES]:
                continue
            for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
                if regex.search(line[:SEARCH_LINE_CHARS]):
                    hits.append(f"{self.relative(file)}:{n}: {line[:MAX_LINE_CHARS]}")
                    if len(hits) >= max_results:
                        break
        if not hits:
            return f"no line matches {pattern!r} under {self.relative(base)}"
        more = " (cut at max_results)" if len(hits) >= max_results else ""
        return f"{len(hits)} match(es){more}:\n" + "\n".join(hits)

    def _files(self, base: Path) -> Iterator[Path]:
        for dirpath, dirnames, filenames in os.walk(base):  # os.walk does not follow symlinked dirs
            dirnames[:] = sorted(d for d in dirnames if d != ".git")
            for name in sorted(filenames):
                file = Path(dirpath) / name
                if file.is_symlink():
                    real = file.resolve()
                    if self.root not in real.parents or ".git" in real.relative_to(self.root).parts:
                        continue
                yield file

    def git_log(self, path: str = "", limit: int = 20) -> str:
        args = ["log", f"-n{limit}", "--no-ext-diff", "--no-textconv", "--format=%h %ad %an%n    %s%n%b"]
        args.append("--date=iso-strict")
        if path.strip():
            args += ["--", self.relative(self.resolve_any(path))]
        return self._git(*args) or "(no commits)"

    def git_show(self, commit: str, path: str = "") -> str:
        if not _REV.fullmatch(commit.strip()):
            raise ToolRefused(f"{commit!r} is not a commit hash (4 to 40 hex digits) or HEAD~N")
        args = [
            "show",
            "--no-ext-diff",
            "--no-textconv",
            "--stat",
            "--patch",
            "--format=fuller",
            commit.strip(),
        ]
        if path.strip():
            args += ["--", self.relative(self.resolve_any(path))]
        return self._git(*args)

    def git_blame(self, path: str, start_line: int = 1, end_line: int | None = None) -> str:
        target = self.resolve(path)
        shown = self.relative(target)
        self.text_of(target, shown)  # binary and huge files are refused here too
        end = end_line if end_line is not None else start_line + 79
        return self._git("blame", "--no-textconv", "-L", f"{start_line},{end}", "--", shown)

    def resolve_any(self, path: str) -> Path:
        """A file or directory inside the repository (for history filters)."""
        try:
            return self.resolve(path)
        except ToolRefused:
            return self.resolve(path, want_dir=True)

    def _git(self, *args: str) -> str:
        try:
            _, out = gitinfo.run_git(self.root, *_NO_PROGRAMS, *args)
        except GitError as exc:
            raise ToolRefused(str(exc)) from None
        return out.decode("utf-8", errors="replace")
