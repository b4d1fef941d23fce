"""A record still being assembled when the daemon is killed is read again after the restart, stored once.

Issue 11 item 4: the cursor stored with a poll's observations already covered the lines of the record the
assembler still held in memory, so a `kill -9` while a traceback was pending lost it for good. Each trial
runs a real `healbot run`, writes lines whose last record stays pending, waits until the daemon has stored
the cursor up to that record (it read the batch), kills the daemon's process group with SIGKILL from here,
starts it again and checks the incident: the whole traceback, counted once.

A traceback is kept pending for long enough by its size: it has several MB of frames, read over several
polls at `POLL_MAX_BYTES` each, and a record is only flushed by a poll that brings no new line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.models import Incident
from bot.sources.file import POLL_MAX_BYTES, FileCursor
from bot.store import Store
from tests.fakes.daemon_proc import StartDaemon, healbot_run_fixture
from tests.fakes.supervisor_env import Program, SupervisorEnv
from tests.fakes.world import healbot_toml, toml_table
from tests.helpers import make_repo, wait_until

pytestmark = pytest.mark.real_cli

__all__ = ["healbot_run_fixture"]  # the fixture

FRAME = '  File "/srv/app/prices.py", line {n}, in total\n    return PRICES[name]\n'
TRACEBACK_HEAD = "Traceback (most recent call last):\n"
TAIL = "KeyError: 'pear'\n"
COMPLETE = (
    "Traceback (most recent call last):\n"
    '  File "/srv/app/cart.py", line 9, in checkout\n'
    "    raise ValueError(price)\n"
    "ValueError: negative price -3\n"
)
LONE = "ERROR lone failure: the disk quota of /srv/spool is exceeded\n"


def many_frames() -> str:
    """Frames for a few polls' worth of bytes: the traceback stays pending while they are read."""
    frames: list[str] = []
    size = 0
    n = 0
    while size < 4 * POLL_MAX_BYTES:
        frame = FRAME.format(n=n % 1000 + 1)
        frames.append(frame)
        size += len(frame)
        n += 1
    return "".join(frames)


@dataclass(frozen=True)
class Case:
    """`before` is written and read before the kill; its last record is pending. `after`: after the
    restart. `pending_first` begins the pending record; `expect` is in the one incident it becomes."""

    before: str
    after: str
    pending_first: str
    expect: tuple[str, ...]
    complete: str | None = None  # a record completed before the pending one: counted once, not twice


FRAMES = many_frames()
CASES = {
    # a blank line ends what came before; the traceback's frames outlast several polls; its end comes later
    "split-across-polls": Case(
        "\n" + TRACEBACK_HEAD + FRAMES, TAIL, TRACEBACK_HEAD, (TRACEBACK_HEAD.strip(), TAIL.strip())
    ),
    "complete-then-pending-in-one-batch": Case(
        COMPLETE + TRACEBACK_HEAD + FRAMES,
        TAIL,
        TRACEBACK_HEAD,
        (TRACEBACK_HEAD.strip(), TAIL.strip()),
        complete="ValueError",
    ),
    # nothing follows: only the quiet poll's flush completes it, after the restart
    "lone-line-completed-by-the-time-out": Case("\n" + LONE, "", LONE, (LONE.strip(),)),
}


@dataclass
class Target:
    """Where the daemon reads: `log` is the file it tails, `write` makes text appear in it."""

    config: Path
    db_path: Path
    log: Path
    write: Callable[[str], None]


def _append(path: Path) -> Callable[[str], None]:
    def write(text: str) -> None:
        with path.open("a") as handle:
            handle.write(text)

    return write


def _file_target(root: Path) -> Iterator[Target]:
    repo = make_repo(root / "svc", {"app.py": "print('hi')\n"})
    log = root / "svc.log"
    log.write_text("starting\n")
    state = root / "state"
    config = root / "healbot.toml"
    config.write_text(healbot_toml(state, repo, [log], healbot={"poll_interval_s": 0.2}))
    yield Target(config, state / "healbot.db", log, _append(log))


def _supervisord_target(root: Path) -> Iterator[Target]:
    """A program under a real supervisord copies what the test writes to its stdout (`tail -F`), so the
    lines reach healbot through supervisord's own stdout_logfile, which healbot asks supervisord for."""
    feed = root / "feed.txt"
    feed.write_text("")
    tail = ["/usr/bin/tail", "-n", "+1", "-F", str(feed)]
    env = SupervisorEnv.start(root / "sv", [Program("feeder", tail)])
    try:
        env.wait_state("feeder", "RUNNING")
        repo = make_repo(root / "svc", {"app.py": "print('hi')\n"})
        state = root / "state"
        config = root / "healbot.toml"
        config.write_text(
            toml_table("healbot", {"state_dir": state, "poll_interval_s": 0.2})
            + toml_table("services.svc", {"repo": repo, "logs": []})
            + toml_table(
                "services.svc.manager",
                {"type": "supervisord", "socket": env.socket_path, "program": "feeder"},
            )
        )
        yield Target(config, state / "healbot.db", env.log_file("feeder", "out"), _append(feed))
    finally:
        env.stop()


TARGETS = {"file": _file_target, "supervisord": _supervisord_target}


@pytest.fixture(params=sorted(TARGETS), name="target")
def target_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if request.param == "supervisord":
        request.applymarker(pytest.mark.supervisord)
    yield from TARGETS[request.param](tmp_path)


def _stored_offset(store: Store, log: Path) -> int | None:
    text = store.get_cursor(f"file:{log}")
    return FileCursor.load(text).offset if text is not None else None


def _offset_of(log: Path, text: str, after: int) -> tuple[int] | None:
    """(byte offset,) of the first `text` in `log` at or after `after`; None while it has not arrived."""
    found = log.read_bytes().find(text.encode(), after)
    return (found,) if found >= 0 else None


@pytest.mark.parametrize("case_name", sorted(CASES))
def test_traceback_pending_at_kill_is_not_lost(
    target: Target, healbot_run: StartDaemon, case_name: str
) -> None:
    case = CASES[case_name]
    daemon = healbot_run(target.config)
    wait_until(target.db_path.exists, 30, what="the store")
    store = Store.open(target.db_path)
    try:
        wait_until(lambda: _stored_offset(store, target.log) is not None, 30, what="the first cursor")
        start = target.log.stat().st_size
        target.write(case.before)
        [pending_at] = wait_until(
            lambda: _offset_of(target.log, case.pending_first, start), 30, what="the lines in the log"
        )
        wait_until(
            lambda: (_stored_offset(store, target.log) or 0) >= pending_at,
            30,
            what="the daemon to have read up to the pending record",
        )
        daemon.close()  # SIGKILL to its process group: the pending record was only in its memory
        assert not daemon.running()

        again = healbot_run(target.config)
        target.write(case.after)
        wait_until(lambda: target.log.read_bytes().endswith((case.before + case.after).encode()), 30)
        size = target.log.stat().st_size
        wait_until(lambda: _stored_offset(store, target.log) == size, 60, what="everything read and stored")
        expected = [i for i in store.incidents() if all(part in "\n".join(i.samples) for part in case.expect)]
        assert len(expected) == 1, _describe(store.incidents())
        assert expected[0].count == 1, _describe(store.incidents())
        if case.complete is not None:
            [complete] = [i for i in store.incidents() if i.exception_type == case.complete]
            assert complete.count == 1, _describe(store.incidents())  # not counted again after the restart
        assert again.stop() == 0, again.output()
    finally:
        store.close()


def _describe(incidents: list[Incident]) -> str:
    return json.dumps([{"title": i.title, "count": i.count, "sample": i.samples[:1]} for i in incidents])
