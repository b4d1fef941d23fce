"""The claude processes the daemon started, recorded in the store, so none outlives a crash unnoticed.

The first line of defence is the kernel's (bot/die_with_parent.py: a child dies with the daemon). This is
the second: each child gets a row before it can spend anything (before its prompt is written) and loses it
once it has ended; at the next start, before recovery re-runs the interrupted diagnoses, the rows left are
settled: a row whose owner (the healbot that started the child) still runs is another live healbot's and
is left alone. A left-over process is killed only if it is provably the one recorded: same boot, same pid, same
start time (so a reused pid is never hit), and its command line is the recorded argv. It is killed through
a pidfd opened before the check, so the pid cannot change hands between the check and the signal; its
session (claude's own tool processes) goes with it. Anything else is left alone and only the row goes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
from dataclasses import dataclass
from pathlib import Path

from bot.errors import RunnerError
from bot.store import ClaudeChild, Store

log = logging.getLogger(__name__)

PROC = Path("/proc")
BOOT_ID = PROC / "sys/kernel/random/boot_id"
EXIT_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    pid: int
    start_ticks: int  # /proc/<pid>/stat field 22: when it started, in clock ticks after boot
    session: int  # field 6


def boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def identity(pid: int) -> ProcessIdentity | None:
    """Who `pid` is now, or None when there is no such process (a zombie counts as none)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # the name in parentheses may hold spaces
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return ProcessIdentity(pid, int(fields[19]), int(fields[3]))


def command_line(pid: int) -> tuple[str, ...] | None:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return tuple(part.decode("utf-8", "surrogateescape") for part in raw.split(b"\0")[:-1])


def is_recorded_process(child: ClaudeChild, current_boot: str) -> bool:
    """True when the process now at `child.pid` is the very one the row recorded."""
    if child.boot_id != current_boot:
        return False
    now = identity(child.pid)
    if now is None or now.start_ticks != child.start_ticks:
        return False
    argv = command_line(child.pid)
    # the exec wrapper (bot/die_with_parent.py) has the child's argv at its end until it execs it
    return argv is not None and argv[len(argv) - len(child.argv) :] == child.argv


class ClaudeBusy(RunnerError):
    """A claude for this incident is running already: a second one would pay twice for one diagnosis."""


class ChildRegistry:
    """The runner's side: `record` a started child before it gets its prompt, `forget` it once it ended."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._boot = boot_id()
        me = identity(os.getpid())
        self._owner = (os.getpid(), me.start_ticks if me is not None else -1)

    def record(
        self, pid: int, argv: tuple[str, ...], *, incident_id: int | None, session_id: str | None, at: float
    ) -> int | None:
        """The row id, or None when the child has ended already (it spends nothing then). ClaudeBusy when
        another live claude holds the incident; a stale row (its process gone, or not the recorded one) is
        replaced."""
        me = identity(pid)
        if me is None:
            return None
        for _ in range(2):
            row = self.store.add_claude_child(
                pid=pid,
                start_ticks=me.start_ticks,
                boot_id=self._boot,
                argv=argv,
                owner_pid=self._owner[0],
                owner_start_ticks=self._owner[1],
                incident_id=incident_id,
                session_id=session_id,
                at=at,
            )
            if row is not None:
                return row
            for held in self.store.claude_children(incident_id=incident_id):
                if is_recorded_process(held, self._boot):
                    raise ClaudeBusy(
                        f"a claude run for #{incident_id} is in progress already (pid {held.pid}); "
                        "it was not started twice"
                    )
                self.store.remove_claude_child(held.id)
        raise ClaudeBusy(f"a claude run for #{incident_id} was started meanwhile; it was not started twice")

    def forget(self, row_id: int) -> None:
        self.store.remove_claude_child(row_id)


def reap_left_over(store: Store, *, at: float) -> int:
    """At start-up, before recovery: kill the recorded children still alive that are provably ours, forget
    every row. Returns how many processes were killed."""
    current_boot = boot_id()
    killed = 0
    for child in store.claude_children():
        if _owner_runs(child, current_boot):
            log.info(
                "claude pid %d belongs to healbot pid %d, which still runs: left alone",
                child.pid,
                child.owner_pid,
            )
            continue
        outcome = _settle(child, current_boot)
        if outcome == KILLED:
            killed += 1
        log.info(
            "claude child pid %d of #%s left by the previous run: %s", child.pid, child.incident_id, outcome
        )
        store.settle_left_over_child(child, outcome, at=at)
    if killed:
        log.info("killed %d claude process(es) left running by the previous daemon", killed)
    return killed


KILLED = "killed at start-up"
GONE = "already gone"
NOT_OURS = "its pid belongs to another process now; left alone"


def _owner_runs(child: ClaudeChild, current_boot: str) -> bool:
    if child.boot_id != current_boot or child.owner_pid == os.getpid():
        return False
    owner = identity(child.owner_pid)
    return owner is not None and owner.start_ticks == child.owner_start_ticks


def _settle(child: ClaudeChild, current_boot: str) -> str:
    if child.boot_id != current_boot:
        return GONE
    try:
        pidfd = os.pidfd_open(child.pid)
    except ProcessLookupError:
        return GONE
    except OSError as exc:
        return f"not checked ({exc.strerror}); left alone"
    try:
        if identity(child.pid) is None:
            return GONE
        if not is_recorded_process(child, current_boot):
            return NOT_OURS
        members = [pid for pid in _session_members(child.pid) if pid != child.pid]
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except ProcessLookupError:
            return GONE
        except PermissionError:
            return "could not be killed (permission denied); left running"
        _kill_members(members, child.pid)
        _wait_exited(pidfd)
        return KILLED
    finally:
        os.close(pidfd)


def _session_members(session: int) -> list[int]:
    """The live processes of `session`. Read while its leader is pinned alive by a pidfd: the session id
    cannot be anyone else's then, and every member descends from the leader."""
    members: list[int] = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            found = identity(int(entry.name))
            if found is not None and found.session == session:
                members.append(found.pid)
    return members


def _kill_members(members: list[int], session: int) -> None:
    for pid in members:
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue
        try:
            found = identity(pid)
            if found is not None and found.session == session:
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
        finally:
            os.close(fd)


def _wait_exited(pidfd: int) -> None:
    """A pidfd becomes readable when its process has exited (it is not our child: its new parent reaps it)."""
    with contextlib.suppress(OSError):
        select.select([pidfd], [], [], EXIT_WAIT_S)
