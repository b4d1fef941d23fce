"""A child that dies with the process that started it: `PR_SET_PDEATHSIG(SIGKILL)` set by a tiny exec
wrapper, so a kill -9 of healbot takes its `claude` (or any opted-in command) with it at once.

Why a wrapper and not `preexec_fn`: the daemon runs threads (asyncio.to_thread), and Python's docs say
`preexec_fn` is not safe in the presence of threads (the child may deadlock before exec). The wrapper is
this file run by the same interpreter as `python -I -S`: it imports only the standard library, sets the
signal, re-checks `getppid()` (if the parent died before prctl, nobody would ever send the signal: it
kills itself instead), then execs the real command in the same process: same pid, same start time, the
command's own argv in /proc. It costs about 20 ms per start.

PDEATHSIG fires when the *thread* that forked the child ends, not the process. Healbot's children are
forked on threads that outlive them: asyncio's `create_subprocess_exec` calls `Popen` synchronously on the
event loop's thread (the daemon's main thread, alive as long as the daemon), and `bot.proc.run` forks on
the calling thread and blocks it until the child is gone.

Run as a script: `python -I -S die_with_parent.py PPID REPORT_FD HAD_LC_CTYPE PROGRAM [ARG...]`. REPORT_FD
is -1, or a pipe on which a failure is written as `stage:errno` (stages: prctl, exec) before exiting 127
(the pipe is close-on-exec, so a successful exec closes it without a word, as `subprocess` does for its
own children). HAD_LC_CTYPE is 0 when the command's environment has no LC_CTYPE: Python's locale coercion
(PEP 538, which -I cannot turn off) adds one to the wrapper's, and it is taken out again before the exec,
so the command gets exactly the environment it was given.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping, Sequence

PR_SET_PDEATHSIG = 1
EXIT_CANNOT_RUN = 127


def command(argv: Sequence[str], *, env: Mapping[str, str] | None, report_fd: int = -1) -> list[str]:
    """The argv that runs `argv` tied to this process's life, in `env` (None: this process's own)."""
    had_lc_ctype = "LC_CTYPE" in (os.environ if env is None else env)
    script = os.path.abspath(__file__)
    return [
        sys.executable,
        "-I",
        "-S",
        script,
        str(os.getpid()),
        str(report_fd),
        str(int(had_lc_ctype)),
        *argv,
    ]


def _fail(report_fd: int, stage: str, errno: int, program: str) -> int:
    if report_fd >= 0:
        os.write(report_fd, f"{stage}:{errno}".encode())
    else:
        print(f"healbot: cannot run {program}: {stage}: {os.strerror(errno)}", file=sys.stderr)
    return EXIT_CANNOT_RUN


def main(args: Sequence[str]) -> int:
    import ctypes  # only here: the parent importing this module for `command` needs no ctypes

    if len(args) < 4:
        print("usage: die_with_parent.py PPID REPORT_FD HAD_LC_CTYPE PROGRAM [ARG...]", file=sys.stderr)
        return 2
    parent, report_fd, argv = int(args[0]), int(args[1]), list(args[3:])
    if args[2] == "0":
        os.environ.pop("LC_CTYPE", None)
    if report_fd >= 0:
        os.set_inheritable(report_fd, False)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        return _fail(report_fd, "prctl", ctypes.get_errno(), argv[0])
    if os.getppid() != parent:  # the parent died before prctl: the signal it would have sent
        os.kill(os.getpid(), signal.SIGKILL)
    try:
        os.execvp(argv[0], argv)  # noqa: S606 - an argv, never a shell: what the caller asked to run
    except OSError as exc:
        return _fail(report_fd, "exec", exc.errno or 0, argv[0])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
