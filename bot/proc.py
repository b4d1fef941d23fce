"""The one way healbot runs a command: an argv list (never a shell) in its own session, with a timeout.

- On timeout the whole process group gets SIGTERM, then SIGKILL after a grace period: grandchildren go too.
- Output goes to temporary files, not pipes: a command that leaves a daemon behind (a restart script)
  would hold a pipe open for as long as the daemon lives, while the files let us return as soon as the
  command itself exits. Each stream is read back capped.
  A command that writes more than `DISK_BOUND_FACTOR` × the cap is stopped, so a runaway cannot fill
  the disk before its timeout; its result then has the signal's exit status and `truncated`.
- `env`, when given, is the child's whole environment: nothing is inherited from the bot.
- A missing or non-executable binary raises the caller's error class with plain words; a non-zero exit
  or a timeout is reported in the result, not raised.
- `die_with_parent=True` ties the command's life to this process (bot/die_with_parent.py): a kill -9 of
  healbot kills it at once. Off by default: the callers' commands are short and bounded by their timeouts,
  and some (a restart, a runbook) should rather finish than be cut in half; a caller whose command runs
  untrusted code or spends money opts in. The errors are the same either way.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bot import die_with_parent as lifeline
from bot.errors import HealbotError

DEFAULT_MAX_OUTPUT_BYTES = 16 * 1024 * 1024
KILL_GRACE_S = 2.0
DISK_BOUND_FACTOR = 4  # output beyond 4 × the cap is never read: the command is stopped (exit -9 or so)
_EXIT_POLL_S = 0.01
_SIZE_CHECK_S = 0.05


@dataclass(frozen=True, slots=True)
class ProcResult:
    argv: tuple[str, ...]
    returncode: int | None  # None when the command was killed on timeout
    stdout: bytes
    stderr: bytes  # empty when stderr was merged into stdout
    timed_out: bool
    duration_s: float
    truncated: bool = False  # stdout or stderr was longer than the cap and was cut

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    @property
    def stdout_text(self) -> str:
        return decode(self.stdout)

    @property
    def stderr_text(self) -> str:
        return decode(self.stderr)

    @property
    def output(self) -> str:
        """stdout then stderr, decoded for people."""
        return decode(self.stdout + self.stderr)


def decode(data: bytes) -> str:
    """Command output as text: UTF-8, undecodable bytes replaced, never an error."""
    return data.decode("utf-8", errors="replace")


def run(
    argv: Sequence[str],
    *,
    timeout_s: float,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    input_bytes: bytes | None = None,
    merge_stderr: bool = False,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    kill_grace_s: float = KILL_GRACE_S,
    error: type[HealbotError] = HealbotError,
    die_with_parent: bool = False,
) -> ProcResult:
    """Run `argv` to completion or until `timeout_s`; `error` is the class raised when it cannot start."""
    args = tuple(argv)
    if not args:
        raise error("empty command")
    with contextlib.ExitStack() as files:
        stdin: IO[bytes] | int = subprocess.DEVNULL
        if input_bytes is not None:  # a file, not a pipe: a child that never reads cannot block us
            stdin = files.enter_context(tempfile.TemporaryFile())
            stdin.write(input_bytes)
            stdin.seek(0)
        out = files.enter_context(tempfile.TemporaryFile())
        err = out if merge_stderr else files.enter_context(tempfile.TemporaryFile())
        started = time.monotonic()
        spawn = _spawn_tied if die_with_parent else _spawn
        proc = spawn(args, cwd=cwd, env=env, stdin=stdin, stdout=out, stderr=err, error=error)
        try:
            timed_out = _wait(proc, started + timeout_s, (out, err), DISK_BOUND_FACTOR * max_output_bytes)
        except BaseException:
            stop_group(proc, 0.0)
            raise
        if proc.returncode is None:
            stop_group(proc, kill_grace_s)
        duration_s = time.monotonic() - started
        stdout, stdout_cut = _read_capped(out, max_output_bytes)
        stderr, stderr_cut = (b"", False) if merge_stderr else _read_capped(err, max_output_bytes)
    return ProcResult(
        args,
        None if timed_out else proc.returncode,
        stdout,
        stderr,
        timed_out,
        duration_s,
        stdout_cut or stderr_cut,
    )


def _wait(
    proc: subprocess.Popen[bytes], deadline: float, outputs: tuple[IO[bytes], IO[bytes]], disk_bound: int
) -> bool:
    """Until the command exits (False) or the deadline (True). A command whose output outgrows
    `disk_bound` on disk is stopped early: it is left running (returncode None) for `stop_group`."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return True
        try:
            proc.wait(timeout=min(remaining, _SIZE_CHECK_S))
            return False
        except subprocess.TimeoutExpired:
            if sum(os.fstat(f.fileno()).st_size for f in set(outputs)) > disk_bound:
                return False


def _spawn(
    args: tuple[str, ...],
    *,
    cwd: Path | str | None,
    env: Mapping[str, str] | None,
    stdin: IO[bytes] | int,
    stdout: IO[bytes],
    stderr: IO[bytes],
    error: type[HealbotError],
    pass_fds: tuple[int, ...] = (),
) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            args,
            cwd=None if cwd is None else str(cwd),
            env=dict(env) if env is not None else None,
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.STDOUT if stderr is stdout else stderr,
            start_new_session=True,
            pass_fds=pass_fds,
        )
    except FileNotFoundError as exc:
        if cwd is not None and exc.filename == str(cwd):
            raise error(f"working directory not found: {cwd} (for {args[0]})") from None
        where = f" (cwd {cwd})" if cwd is not None else ""
        raise error(f"command not found: {args[0]}{where}") from None
    except PermissionError:
        raise error(f"command not executable: {args[0]}") from None
    except OSError as exc:  # ENOEXEC (not a program), E2BIG, ...
        raise error(f"cannot run {args[0]}: {exc.strerror or exc}") from None


def _spawn_tied(
    args: tuple[str, ...],
    *,
    cwd: Path | str | None,
    env: Mapping[str, str] | None,
    stdin: IO[bytes] | int,
    stdout: IO[bytes],
    stderr: IO[bytes],
    error: type[HealbotError],
) -> subprocess.Popen[bytes]:
    """`_spawn` through the die-with-parent wrapper. The wrapper reports a failed exec on a pipe, read
    here until it closes (at the exec), so the errors are `_spawn`'s own."""
    report_r, report_w = os.pipe()
    try:
        wrapped = tuple(lifeline.command(args, env=env, report_fd=report_w))
        proc = _spawn(
            wrapped,
            cwd=cwd,
            env=env,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            error=error,
            pass_fds=(report_w,),
        )
        os.close(report_w)
        report_w = -1
        with os.fdopen(report_r, "rb") as report:
            report_r = -1
            failure = report.read().decode("ascii", "replace")
    finally:
        for fd in (report_r, report_w):
            if fd >= 0:
                os.close(fd)
    if not failure:
        return proc
    proc.wait()
    stage, _, number = failure.partition(":")
    errno_value = int(number) if number.isdigit() else 0
    where = f" (cwd {cwd})" if cwd is not None else ""
    if stage == "exec" and errno_value == errno.ENOENT:
        raise error(f"command not found: {args[0]}{where}")
    if stage == "exec" and errno_value == errno.EACCES:
        raise error(f"command not executable: {args[0]}")
    if stage == "prctl":
        raise error(f"cannot run {args[0]}: cannot tie it to healbot's life: {os.strerror(errno_value)}")
    raise error(f"cannot run {args[0]}: {os.strerror(errno_value)}")


def stop_group(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM the process group, give its leader `grace_s` to exit, then SIGKILL the group and reap.

    The leader is not reaped until the SIGKILL went out, so its pid (the group id) cannot be reused by an
    unrelated process in between.
    """
    if grace_s > 0:
        _signal_group(proc.pid, signal.SIGTERM)
        _wait_exited(proc.pid, grace_s)
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _wait_exited(pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return
        except ChildProcessError:
            return
        time.sleep(_EXIT_POLL_S)


def _read_capped(handle: IO[bytes], limit: int) -> tuple[bytes, bool]:
    handle.seek(0)
    data = handle.read(limit + 1)
    return data[:limit], len(data) > limit
