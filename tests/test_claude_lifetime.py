"""Issue 11 item 7: claude must not outlive the daemon, and one diagnosis is never paid for twice.

Real processes throughout: the real `healbot run` killed with SIGKILL from outside while the real `claude`
talks to the fake Messages API, parents that start children and are killed, the reaper against live
processes; every pid a test starts is ended by that pid.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import die_with_parent
from bot.config import ClaudeConfig
from bot.demo.fake_messages_api import FakeMessagesApi
from bot.models import IncidentState, RunRequest
from bot.runner import children
from bot.runner.children import ChildRegistry, ClaudeBusy
from bot.runner.claude_cli import ClaudeCliRunner
from bot.store import Store
from tests.fakes.daemon_proc import FAKE_CLAUDE_ENV, StartDaemon, healbot_run_fixture
from tests.fakes.world import claude_via_fake_api, scratch_service, traceback_lines
from tests.helpers import until, wait_until

__all__ = ["healbot_run_fixture"]  # the fixture

PY = sys.executable
REPO_ROOT = Path(__file__).resolve().parents[1]


def alive(pid: int) -> bool:
    return children.identity(pid) is not None  # a zombie is not alive


def kill_if_alive(pid: int) -> None:
    if alive(pid):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def started() -> Iterator[list[int]]:
    """Pids a test started; each still alive at the end is killed by its pid."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        kill_if_alive(pid)


def sleeper(tmp_path: Path, name: str = "sleeper") -> str:
    """A stand-in child: writes its pid to <name>.pid, then sleeps."""
    path = tmp_path / name
    path.write_text(
        f"#!{PY}\nimport os, sys, time\n"
        f"open({str(tmp_path / (name + '.pid'))!r}, 'w').write(str(os.getpid()))\n"
        "sys.stdin.read() if '--read' in sys.argv else None\n"
        "time.sleep(120)\n"
    )
    path.chmod(0o755)
    return str(path)


def pid_in(path: Path) -> int:
    return int(wait_until(lambda: path.exists() and path.read_text().strip(), 20, what=f"{path.name}"))


def parent_process(code: str) -> subprocess.Popen[bytes]:
    """A python process that imports bot from this checkout and runs `code` (it starts the child)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen([PY, "-c", textwrap.dedent(code)], env=env, start_new_session=True)


# --- the kernel ties the child to the parent --------------------------------------------------------------


def test_the_wrapper_does_not_run_the_command_when_its_parent_died_before_it_was_tied(tmp_path: Path) -> None:
    """The race PDEATHSIG leaves open: the parent dies before prctl; the wrapper then kills itself."""
    marker = tmp_path / "ran"
    script = die_with_parent.__file__
    not_my_parent = "1"  # what getppid() says once the real parent died (or a subreaper's pid)
    result = subprocess.run(
        [PY, "-I", "-S", script, not_my_parent, "-1", "1", "touch", str(marker)], check=False, timeout=20
    )
    assert result.returncode == -signal.SIGKILL
    assert not marker.exists()

    ran = subprocess.run(
        [PY, "-I", "-S", script, str(os.getpid()), "-1", "1", "touch", str(marker)], check=False, timeout=20
    )
    assert ran.returncode == 0 and marker.exists()


@pytest.mark.parametrize("die", [True, False], ids=["die_with_parent", "default"])
def test_a_proc_run_child_dies_with_a_killed_parent_only_when_asked(
    tmp_path: Path, started: list[int], die: bool
) -> None:
    """bot.proc.run forks on a worker thread (as asyncio.to_thread runs it); a kill -9 of the parent takes
    the child along with `die_with_parent`, and leaves it running by default (its timeout bounds it)."""
    child = sleeper(tmp_path)
    parent = parent_process(
        f"""
        import threading
        from bot import proc
        worker = threading.Thread(target=proc.run, args=([{child!r}],), kwargs={{"timeout_s": 120, "die_with_parent": {die}}})
        worker.start()
        worker.join()
        """
    )
    started.append(parent.pid)
    pid = pid_in(tmp_path / "sleeper.pid")
    started.append(pid)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(timeout=20)
    if die:
        wait_until(lambda: not alive(pid), 10, what="the child to die with its parent")
    else:
        assert alive(pid)


def test_a_claude_runner_child_dies_with_its_killed_parent(tmp_path: Path, started: list[int]) -> None:
    """The runner's child (a stand-in claude here) is started on the loop's thread; it dies with the parent
    although it runs in a session of its own."""
    child = sleeper(tmp_path)
    parent = parent_process(
        f"""
        import asyncio
        from bot.config import ClaudeConfig
        from bot.models import RunRequest
        from bot.runner.claude_cli import ClaudeCliRunner
        runner = ClaudeCliRunner(ClaudeConfig(binary={child!r}, timeout_s=120, idle_timeout_s=120))
        asyncio.run(runner.run(RunRequest(prompt="p", schema="", cwd={str(tmp_path)!r})))
        """
    )
    started.append(parent.pid)
    pid = pid_in(tmp_path / "sleeper.pid")
    started.append(pid)
    assert os.getsid(pid) == pid  # its own session: the daemon's group kill does not reach it
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(timeout=20)
    wait_until(lambda: not alive(pid), 10, what="the claude stand-in to die with its parent")


# --- the store remembers each child; the next start settles what is left -------------------------------


def start_ticks(pid: int) -> int:
    found = children.identity(pid)
    assert found is not None
    return found.start_ticks


def record(store: Store, pid: int, **changes: object) -> int:
    """A row as a healbot that has died since would have left it (its owner: this process, which counts
    as gone for the reaper it calls itself)."""
    values: dict[str, object] = {
        "pid": pid,
        "start_ticks": start_ticks(pid),
        "boot_id": children.boot_id(),
        "argv": (),
        "owner_pid": os.getpid(),
        "owner_start_ticks": start_ticks(os.getpid()),
        "incident_id": None,
        "session_id": "s-1",
        "at": 1.0,
    } | changes
    row = store.add_claude_child(**values)  # type: ignore[arg-type]
    assert row is not None
    return row


def spawn(tmp_path: Path, started: list[int], name: str) -> tuple[int, tuple[str, ...]]:
    argv = (sleeper(tmp_path, name),)
    proc = subprocess.Popen(argv, start_new_session=True)
    started.append(proc.pid)
    pid_in(tmp_path / f"{name}.pid")
    return proc.pid, argv


LIVE_OWNER = {"owner_pid": os.getppid(), "owner_start_ticks": start_ticks(os.getppid())}
CASES = {
    # how the row differs from the live process → is it killed
    "the_same_process": ({}, True),
    "the_same_process_of_a_healbot_that_still_runs": (LIVE_OWNER, False),
    "a_reused_pid_with_another_start_time": ({"start_ticks": -1}, False),
    "another_command_line": ({"argv": ("/usr/bin/something-else",)}, False),
    "another_boot": ({"boot_id": "another-boot"}, False),
}


@pytest.mark.parametrize(("changes", "killed"), list(CASES.values()), ids=list(CASES))
def test_the_reaper_kills_only_the_process_it_recorded(
    tmp_path: Path, started: list[int], changes: dict[str, object], killed: bool
) -> None:
    store = Store.open(tmp_path / "h.db")
    pid, argv = spawn(tmp_path, started, "child")
    record(store, pid, **({"argv": argv, "incident_id": 7} | changes))

    assert children.reap_left_over(store, at=2.0) == (1 if killed else 0)

    if killed:
        wait_until(lambda: not alive(pid), 10, what="the left-over child to be killed")
    else:
        assert alive(pid)
    if changes is LIVE_OWNER:  # another healbot's child, running now: its row stays
        assert [c.pid for c in store.claude_children()] == [pid]
        return
    assert store.claude_children() == []  # every row is settled, killed or not
    [line] = [e for e in store.audit_log(incident_id=7) if e.event == "claude_run_interrupted"]
    assert f"pid {pid}" in line.detail
    assert ("killed at start-up" in line.detail) is killed


def test_the_reaper_forgets_a_dead_pid_and_kills_the_childs_own_tool_processes(
    tmp_path: Path, started: list[int]
) -> None:
    store = Store.open(tmp_path / "h.db")
    dead = subprocess.Popen(["true"])
    dead.wait()
    record_dead = store.add_claude_child(
        pid=dead.pid, start_ticks=1, boot_id=children.boot_id(), argv=("true",), owner_pid=os.getpid(),
        owner_start_ticks=start_ticks(os.getpid()), incident_id=1, session_id=None, at=1.0,
    )  # fmt: skip
    assert record_dead is not None
    grandchild = tmp_path / "grandchild.pid"
    leader = tmp_path / "leader"
    leader.write_text(
        f"#!{PY}\nimport subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(grandchild)!r}, 'w').write(str(p.pid))\ntime.sleep(120)\n"
    )
    leader.chmod(0o755)
    proc = subprocess.Popen([str(leader)], start_new_session=True)
    started.append(proc.pid)
    tool = pid_in(grandchild)
    started.append(tool)
    record(store, proc.pid, argv=(str(leader),), incident_id=2)

    assert children.reap_left_over(store, at=2.0) == 1

    wait_until(lambda: not alive(proc.pid) and not alive(tool), 10, what="the child and its tool process")
    assert store.claude_children() == []
    outcomes = {e.incident_id: e.detail for e in store.audit_log() if e.event == "claude_run_interrupted"}
    assert "already gone" in outcomes[1] and "killed at start-up" in outcomes[2]


def test_one_live_claude_per_incident_and_a_stale_row_is_replaced(tmp_path: Path, started: list[int]) -> None:
    store = Store.open(tmp_path / "h.db")
    registry = ChildRegistry(store)
    first, argv = spawn(tmp_path, started, "first")
    second, argv2 = spawn(tmp_path, started, "second")
    registry.record(first, argv, incident_id=3, session_id="a", at=1.0)

    with pytest.raises(ClaudeBusy, match="#3 is in progress already"):
        registry.record(second, argv2, incident_id=3, session_id="b", at=1.0)
    other = registry.record(second, argv2, incident_id=4, session_id="b", at=1.0)  # another incident: fine

    os.kill(first, signal.SIGKILL)
    wait_until(lambda: not alive(first), 10, what="the first child to end")
    registry.forget(other)
    registry.record(second, argv2, incident_id=3, session_id="b", at=2.0)  # the stale row is replaced
    assert [(c.pid, c.session_id) for c in store.claude_children()] == [(second, "b")]


def test_the_runner_records_its_child_before_the_prompt_and_forgets_it_at_the_end(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "h.db")
    prompt_seen = tmp_path / "prompt"
    go = tmp_path / "go"
    stub = tmp_path / "claude-stub"
    stub.write_text(
        f"#!{PY}\nimport json, os, sys, time\n"
        "prompt = sys.stdin.read()\n"
        f"open({str(prompt_seen)!r}, 'w').write(prompt)\n"
        f"while not os.path.exists({str(go)!r}):\n    time.sleep(0.01)\n"
        "print(json.dumps({'type': 'result', 'subtype': 'success', 'is_error': False, 'result': 'ok',"
        " 'num_turns': 1}))\n"
    )
    stub.chmod(0o755)
    runner = ClaudeCliRunner(ClaudeConfig(binary=str(stub)))
    runner.track_children(ChildRegistry(store))
    request = RunRequest(prompt="the prompt", schema="", cwd=str(tmp_path), incident_id=9)

    async def scenario() -> None:
        task = asyncio.create_task(runner.run(request))
        [child] = await until(store.claude_children, what="the child's row")
        assert (child.incident_id, child.pid) == (9, runner.running_pids()[0])
        assert (
            child.argv[0] == str(stub)
            and child.session_id == child.argv[child.argv.index("--session-id") + 1]
        )
        await until(prompt_seen.exists, what="the prompt")
        with pytest.raises(ClaudeBusy, match="#9"):
            await runner.run(request)  # the same incident again while it runs: refused, nothing started
        go.write_text("")
        result = await task
        assert result.text == "ok"

    asyncio.run(scenario())
    assert store.claude_children() == []


# --- the real daemon, killed from outside while claude works --------------------------------------------

PHASES = {
    "startup": "hang",  # killed as soon as claude exists: it has not sent its request yet
    "streaming": "stall",  # the fake sent message_start and holds the stream open
    "hanging": "hang",  # the fake holds the request without an answer
}


def claude_pids(fake: FakeMessagesApi) -> list[int]:
    """Live processes whose environment points at this test's fake API: claudes of this test only."""
    marker = f"ANTHROPIC_BASE_URL={fake.url}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0") and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


@pytest.mark.real_cli
@pytest.mark.parametrize("phase", list(PHASES))
def test_claude_child_dies_with_a_killed_daemon(tmp_path: Path, healbot_run: StartDaemon, phase: str) -> None:
    service = scratch_service(tmp_path)
    with FakeMessagesApi(default_scenario=PHASES[phase]) as fake:
        config = service.write_config(healbot={"poll_interval_s": 0.1}, claude=claude_via_fake_api(fake.url))
        first = healbot_run(config, env=FAKE_CLAUDE_ENV)
        leftovers: list[int] = []
        try:
            wait_until(service.db_path.exists, 20, what="the store")
            store = Store.open(service.db_path)
            wait_until(lambda: store.get_cursor(f"file:{service.log}"), 20, what="the first cursor")
            service.append(traceback_lines(service.repo))
            if phase == "startup":
                leftovers = wait_until(lambda: claude_pids(fake), 30, what="claude to start")
            else:
                wait_until(fake.message_requests, 30, what="claude's request at the fake")
                leftovers = claude_pids(fake)
            assert leftovers
            os.kill(first.proc.pid, signal.SIGKILL)
            first.wait(timeout=20)
            wait_until(lambda: not claude_pids(fake), 10, what="claude to die with the daemon")
        finally:
            for pid in leftovers:
                kill_if_alive(pid)
            first.close()
        before = len(fake.message_requests())
        old_sessions = {r.headers.get("x-claude-code-session-id") for r in fake.message_requests()}
        [incident] = store.incidents()
        assert incident.state is IncidentState.DIAGNOSING

        fake.default_scenario = "structured"
        second = healbot_run(config, env=FAKE_CLAUDE_ENV)
        try:
            wait_until(
                lambda: store.incident(incident.id).state is IncidentState.AWAITING_APPROVAL,
                60,
                what="the diagnosis run again",
            )
        finally:
            assert second.stop() == 0, second.output()
        assert claude_pids(fake) == []  # no orphan left

        new = fake.message_requests()[before:]
        assert len(new) == 1  # one new request series, answered in one request
        assert new[0].headers.get("x-claude-code-session-id") not in old_sessions
        assert store.claude_children() == []
        audit = store.audit_log(incident_id=incident.id)
        assert [e.detail for e in audit if e.event == "state:diagnosing"] == ["diagnosis started"] * 2
        interrupted = [e.detail for e in audit if e.event == "claude_run_interrupted"]
        # the kernel was first; a kill at start-up may come before the row is written (and any prompt)
        assert all(detail.endswith("already gone") for detail in interrupted)
        assert len(interrupted) <= 1 and (phase == "startup" or len(interrupted) == 1)
        assert len(store.diagnoses(incident.id)) == 1
        store.close()
