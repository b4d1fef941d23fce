"""Run a log command (journalctl, docker logs) for a source, through bot.proc: SourceError when it cannot."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bot import proc
from bot.errors import SourceError

MAX_OUTPUT_BYTES = 16 * 1024 * 1024
MAX_STDERR_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Output:
    returncode: int
    stdout: bytes  # at most MAX_OUTPUT_BYTES: a longer output was cut there
    stderr: bytes


# What a source calls to run its command: (argv, timeout_s) -> Output. Tests inject recorded outputs.
Runner = Callable[[Sequence[str], float], Output]


def run_log_command(argv: Sequence[str], *, timeout_s: float) -> Output:
    result = proc.run(argv, timeout_s=timeout_s, max_output_bytes=MAX_OUTPUT_BYTES, error=SourceError)
    if result.returncode is None:
        raise SourceError(f"{argv[0]} did not answer within {timeout_s:g} s")
    return Output(result.returncode, result.stdout, result.stderr[:MAX_STDERR_BYTES])


def default_runner(argv: Sequence[str], timeout_s: float) -> Output:
    return run_log_command(argv, timeout_s=timeout_s)
