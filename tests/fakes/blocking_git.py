"""A `git` placed first on a daemon's PATH that, at one chosen git step, tells the test and blocks, so the
test can SIGKILL the daemon from outside right there (no HEALBOT_FAULT, no help from the product).

A step is `SUBCOMMAND[:ARG][#N][@after]`: the N-th (default 1st) invocation of SUBCOMMAND whose argv
holds ARG; `@after` runs the real git first and blocks after it, else it blocks before. Several steps,
comma-separated: the first one reached blocks, once. The blocked process writes its pid to `reached`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from pathlib import Path

from tests.helpers import wait_until

_SCRIPT = r"""#!/bin/sh
real='{real}'
dir='{dir}'
sub=''
skip=0
for a in "$@"; do
  if [ "$skip" = 1 ]; then skip=0; continue; fi
  case "$a" in
    -c|-C) skip=1 ;;
    -*) ;;
    *) sub="$a"; break ;;
  esac
done
block() {{
  if mkdir "$dir/claimed" 2>/dev/null; then
    echo $$ > "$dir/reached.tmp" && mv "$dir/reached.tmp" "$dir/reached"
    exec sleep 1000
  fi
}}
IFS=','
for spec in $HEALBOT_TEST_BLOCK_GIT; do
  unset IFS
  when=before
  case "$spec" in *@after) when=after; spec="${{spec%@after}}" ;; esac
  nth=1
  case "$spec" in *#*) nth="${{spec##*#}}"; spec="${{spec%#*}}" ;; esac
  want="${{spec%%:*}}"
  arg=''
  case "$spec" in *:*) arg="${{spec#*:}}" ;; esac
  [ "$sub" = "$want" ] || continue
  if [ -n "$arg" ]; then
    found=0
    for a in "$@"; do [ "$a" = "$arg" ] && found=1; done
    [ "$found" = 1 ] || continue
  fi
  count_file="$dir/count-$(echo "$spec" | tr -c 'a-zA-Z0-9' '_')"
  n=$(( $(cat "$count_file" 2>/dev/null || echo 0) + 1 ))
  echo "$n" > "$count_file"
  [ "$n" = "$nth" ] || continue
  if [ "$when" = after ]; then
    "$real" "$@"
    code=$?
    block
    exit $code
  fi
  block
done
exec "$real" "$@"
"""


class BlockingGit:
    """The wrapper in `directory/bin/git`; `env(steps)` is what the daemon needs to use it."""

    def __init__(self, directory: Path) -> None:
        real = shutil.which("git")
        assert real is not None, "git is not installed"
        self.dir = directory
        self.bin = directory / "bin"
        self.bin.mkdir(parents=True)
        wrapper = self.bin / "git"
        wrapper.write_text(_SCRIPT.format(real=real, dir=directory))
        wrapper.chmod(0o755)

    def env(self, steps: str) -> dict[str, str | None]:
        return {"PATH": f"{self.bin}:{os.environ['PATH']}", "HEALBOT_TEST_BLOCK_GIT": steps}

    def wait_reached(self, timeout: float, what: str) -> int:
        """The pid of the blocked git, once a step was reached."""
        reached = self.dir / "reached"
        wait_until(reached.exists, timeout, what=what)
        return int(reached.read_text().strip())

    @staticmethod
    def kill(pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
