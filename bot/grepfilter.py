"""The `grep` pre-filter of `healbot scan`: GNU grep finds candidate lines several times faster than `re`.

`GrepHits.start` runs `grep -a -b -n -E CANDIDATE_PATTERN FILE` (C locale, argv list, own session) and
iterating it yields `(offset of the line start, line number)` for each line grep reports, while grep is
still reading, so the caller assembles records on one core while grep searches on the other.

CANDIDATE_PATTERN is written in the common subset of Python `re` and POSIX ERE (plain strings joined by `|`),
so `re` and grep select the same lines; bot.fastscan compiles it for its own search.

When grep is missing, cannot start, fails, times out or reports lines in a shape this module does not
expect, iteration stops and `failure` says why. The lines yielded before that are exactly what grep
reported, in file order, so a caller can carry on with its own search after the last line it took.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

# A superset of what bot.grouping calls an error: level words ERROR and worse, exception class names,
# tracebacks, Java causes, `panic`, `error:`/`fatal:`, and HTTP 5xx access lines (`HTTP/1.1" 503`).
# GNU grep's DFA runs fastest while no alternative has begun, so an alternative may be the tail of the word
# it stands for, from a byte rarer in logs: `rror` for `error` and `Error` (`e` is the commonest letter),
# `ATAL` and `ANIC` for FATAL and PANIC (the F of INFO, the P of POST and HTTP), `raceback` and `wable` for
# Traceback and Throwable (the T of ISO timestamps and HTTP), `" 5` for an access line's `HTTP/…" 5` (every
# access line holds `HTTP/1.1"`). Tails only add lines, which grouping then drops.
CANDIDATE_PATTERN = (
    'ERR|CRIT|ATAL|SEVERE|ALERT|EMERG|ANIC|rror|Exception|wable|raceback|Caused by|panic|fatal|" 5'
)

# The same search over decoded text: a record it finds nothing in is no error (the daemon's pre-filter).
CANDIDATE_TEXT = re.compile(CANDIDATE_PATTERN)

_PREFIX_MAX = 48  # two 20-digit numbers and their colons fit
_READ_BYTES = 256 * 1024
_PIPE_BYTES = 1024 * 1024  # the default /proc/sys/fs/pipe-max-size
_SECONDS_PER_BYTE = 1 / 20e6  # grep reads hundreds of MB/s; this is the timeout's allowance


def _widen_pipe(fd: int) -> None:
    """Let grep write up to _PIPE_BYTES ahead of the reader (Linux), so it keeps reading while the caller
    imports or assembles; elsewhere, or when the system refuses, the pipe keeps its size."""
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)


def grep_timeout(size: int) -> float:
    """Seconds grep may take on a file of `size` bytes before the caller stops waiting for it."""
    return 10.0 + size * _SECONDS_PER_BYTE


class GrepHits:
    """Candidate lines of one file as grep reports them; iterate once, then look at `failure`."""

    def __init__(self, proc: _Spawned | None, deadline: float, failure: str | None) -> None:
        self._proc = proc
        self._deadline = deadline
        self.failure = failure  # why grep's report is incomplete; None while it is complete so far
        # Called while grep has written nothing new, until it has or the call returns False: the caller's
        # work that can wait for no line of grep's (it must not iterate these hits).
        self.while_waiting: Callable[[], bool] | None = None

    @classmethod
    def start(cls, path: Path, pattern: str = CANDIDATE_PATTERN, *, timeout_s: float) -> GrepHits:
        """Start grep on `path` now; a missing or unstartable grep gives an object that yields nothing."""
        deadline = time.monotonic() + timeout_s
        grep = _which("grep")
        if grep is None:
            return cls(None, deadline, "no grep on PATH")
        argv = [grep, "-a", "-b", "-n", "-h", "-E", "-e", pattern, "--", str(path)]
        try:
            proc = _Spawned.start(argv)
        except OSError as exc:
            return cls(None, deadline, f"cannot start {grep}: {exc}")
        _widen_pipe(proc.stdout)
        return cls(proc, deadline, None)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self._proc is None or self.failure is not None:
            return
        last_offset, last_line = -1, 0
        for prefixes in self._report_prefixes():
            for prefix in prefixes:
                number, colon, rest = prefix.partition(b":")  # "LINE:OFFSET:" before each reported line
                offset_digits, second_colon, _ = rest.partition(b":")
                if not (colon and second_colon and number.isdigit() and offset_digits.isdigit()):
                    self._fail(f"unexpected grep output {prefix[:_PREFIX_MAX]!r}")
                    return
                line_no, offset = int(number), int(offset_digits)
                if offset <= last_offset or line_no <= last_line:
                    self._fail(f"grep reported line {line_no} at byte {offset} out of order")
                    return
                last_offset, last_line = offset, line_no
                yield offset, line_no
        if self.failure is None:
            status = self._wait()
            if status not in (0, 1):  # 1: no line matched
                self._fail(f"grep exited with status {status}")

    def fail(self, reason: str) -> None:
        """The caller found grep's report wrong: stop grep and record why."""
        self._fail(reason)

    def close(self) -> None:
        """Stop grep (its whole process group) if it still runs, and reap it."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # it ended on its own since we looked
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.close_stdout()

    def __enter__(self) -> GrepHits:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- internals ---------------------------------------------------------------------------------

    def _fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
        self.close()

    def _wait(self) -> int:
        assert self._proc is not None
        status = self._proc.wait(self._deadline)
        if status is None:
            self._fail("grep timed out")
            return -1
        return status

    def _chunks(self) -> Iterator[bytes]:
        """grep's output as it comes; stops at its end, or at the deadline with `failure` set."""
        assert self._proc is not None
        fd = self._proc.stdout
        while True:
            work = self.while_waiting
            if work is not None:
                while not select.select([fd], [], [], 0)[0] and work():
                    pass
            remaining = self._deadline - time.monotonic()
            readable = select.select([fd], [], [], max(0.0, remaining))[0] if remaining > 0 else []
            if not readable:
                self._fail("grep timed out")
                return
            chunk = os.read(fd, _READ_BYTES)
            if not chunk:
                return
            yield chunk

    def _report_prefixes(self) -> Iterator[list[bytes]]:
        """The first bytes (up to _PREFIX_MAX) of each complete line of grep's output, a list per read.

        The text after the prefix is not kept beyond the read that brought it, however long the line.
        """
        pending = b""  # the start of the report line being read
        for chunk in self._chunks():
            pieces = chunk.split(b"\n")
            if len(pieces) == 1:
                if len(pending) < _PREFIX_MAX:
                    pending += chunk[: _PREFIX_MAX - len(pending)]
                continue
            first = (
                pending + pieces[0][: _PREFIX_MAX - len(pending)] if len(pending) < _PREFIX_MAX else pending
            )
            prefixes = [first]
            prefixes.extend(piece[:_PREFIX_MAX] for piece in pieces[1:-1])
            pending = pieces[-1][:_PREFIX_MAX]
            yield prefixes
        if pending and self.failure is None:
            self._fail("grep output ended inside a line")


def _which(name: str) -> str | None:
    """`shutil.which(name)` for a plain name (shutil and subprocess cost `healbot scan` milliseconds before
    grep starts)."""
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(folder or os.curdir, name)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None


class _Spawned:
    """grep started with `posix_spawn`: stdin and stderr /dev/null, stdout a pipe, its own session, C
    locale and nothing else in its environment (no GREP_OPTIONS or GREP_COLOR(S))."""

    def __init__(self, pid: int, stdout: int) -> None:
        self.pid = pid
        self.stdout = stdout  # the read end of grep's stdout; -1 once closed
        self.returncode: int | None = None

    @classmethod
    def start(cls, argv: list[str]) -> _Spawned:
        read_end, write_end = os.pipe()  # both close on exec; the dup2 below gives grep its fd 1
        try:
            pid = os.posix_spawn(
                argv[0],
                argv,
                {"LC_ALL": "C"},  # bytes, not characters
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, write_end, 1),
                    (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
                ],
                setsid=True,
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        return cls(pid, read_end)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, deadline: float | None = None) -> int | None:
        """The exit code, waiting until the `time.monotonic()` deadline (None: for ever); None when grep
        still runs at the deadline."""
        if deadline is not None:
            _wait_exit(self.pid, deadline)
            return self.poll()
        if self.returncode is None:
            self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        return self.returncode

    def close_stdout(self) -> None:
        if self.stdout >= 0:
            os.close(self.stdout)
            self.stdout = -1


def _wait_exit(pid: int, deadline: float) -> None:
    """Return once `pid` has exited (not reaped) or at `deadline`."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux >= 5.3: look every 10 ms
        while (
            time.monotonic() < deadline
            and os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        ):
            time.sleep(0.01)
        return
    try:
        select.select([pidfd], [], [], max(0.0, deadline - time.monotonic()))
    finally:
        os.close(pidfd)
