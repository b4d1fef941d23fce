"""Another process holding an exclusive flock on a file (healbot's apply lock, say) until its stdin is closed
or it is released; always ended by its pid."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HOLDER_CODE = """\
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print('locked', flush=True)
sys.stdin.read()
"""


def hold_flock(path: Path) -> subprocess.Popen[str]:
    """Returns once the lock is held."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER_CODE, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    except BaseException:
        release(proc)
        raise
    return proc


def release(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()
