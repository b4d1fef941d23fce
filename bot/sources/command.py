"""Run a log command (journalctl, docker logs) for a source: argv, own session, timeout, group kill."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

from bot.errors import SourceError

MAX_OUTPUT_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Output:
    returncode: int
    stdout: bytes
    stderr: bytes


def run_log_command(argv: Sequence[str], *, timeout_s: float) -> Output:
    """Output goes to temporary files (a command may leave a child holding a pipe); capped when read."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True
            )
        except FileNotFoundError:
            raise SourceError(f"command not found: {argv[0]}") from None
        except PermissionError:
            raise SourceError(f"command not executable: {argv[0]}") from None
        try:
            returncode = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise SourceError(f"{argv[0]} did not answer within {timeout_s:g} s") from None
        out.seek(0)
        err.seek(0)
        return Output(returncode, out.read(MAX_OUTPUT_BYTES), err.read(64 * 1024))
