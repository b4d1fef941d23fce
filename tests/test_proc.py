"""bot.proc, the one subprocess runner, and bot.supervisor_rpc, the one supervisord XML-RPC client.

Real processes throughout: every pid a test starts is checked or ended by that pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import xmlrpc.client
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from bot import init, proc, supervisor_rpc
from bot.errors import GitError, HealbotError, ServiceError, SourceError
from bot.proc import ProcResult
from tests.helpers import wait_until

PY = sys.executable


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _kill_if_alive(pid_file: Path) -> None:
    if pid_file.exists() and pid_file.read_text().strip():
        pid = int(pid_file.read_text())
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)


def _python(code: str) -> list[str]:
    return [PY, "-c", code]


def _spawn_grandchild_then_sleep(pids: Path, *, ignore_term: bool = False) -> list[str]:
    ignore = "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_term else ""
    grandchild = f"import signal, time\n{ignore}time.sleep(60)"
    return _python(
        "import os, signal, subprocess, sys, time\n"
        f"{ignore}"
        f"child = subprocess.Popen([sys.executable, '-c', {grandchild!r}])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(60)\n"
    )


# --- timeouts kill the whole group ----------------------------------------------------------------------


@pytest.mark.parametrize("die", [False, True], ids=["plain", "die_with_parent"])
def test_timeout_kills_the_child_and_its_grandchild_by_pid(tmp_path: Path, die: bool) -> None:
    pids = tmp_path / "pids"
    started = time.monotonic()
    result = proc.run(_spawn_grandchild_then_sleep(pids), timeout_s=1.0, die_with_parent=die)

    assert result.timed_out and result.returncode is None and not result.ok
    assert time.monotonic() - started < 1.0 + proc.KILL_GRACE_S + 2
    child, grandchild = (int(p) for p in pids.read_text().split())
    assert _gone(child)  # reaped by run() itself
    wait_until(lambda: _gone(grandchild), timeout=5, what="the grandchild to be killed with its group")


def test_a_group_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    started = time.monotonic()
    result = proc.run(_spawn_grandchild_then_sleep(pids, ignore_term=True), timeout_s=1.0, kill_grace_s=0.5)
    elapsed = time.monotonic() - started

    assert result.timed_out
    assert 1.5 <= elapsed < 4.0  # the grace period was waited out, then SIGKILL
    child, grandchild = (int(p) for p in pids.read_text().split())
    assert _gone(child)
    wait_until(lambda: _gone(grandchild), timeout=5, what="the SIGTERM-proof grandchild to be killed")


def test_sigterm_comes_first_so_a_command_can_clean_up(tmp_path: Path) -> None:
    cleaned = tmp_path / "cleaned"
    code = (
        "import signal, sys, time\n"
        f"def stop(*_):\n    open({str(cleaned)!r}, 'w').write('bye')\n    sys.exit(3)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n"
    )
    result = proc.run(_python(code), timeout_s=1.0)

    assert result.timed_out and result.returncode is None
    assert cleaned.read_text() == "bye"
    assert result.stdout == b"started\n"  # what it printed before the timeout is kept


def test_a_grandchild_that_left_the_group_holding_stdout_does_not_hold_up_the_timeout(tmp_path: Path) -> None:
    escaped = tmp_path / "escaped.pid"
    code = (
        "import subprocess, time\n"  # a new session: the group kill cannot reach it; it inherits stdout
        "p = subprocess.Popen(['sleep', '30'], start_new_session=True)\n"
        f"open({str(escaped)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(60)\n"
    )
    try:
        started = time.monotonic()
        result = proc.run(_python(code), timeout_s=1.0, kill_grace_s=0.2)
        assert result.timed_out
        assert time.monotonic() - started < 5.0  # pipes would have waited 30 s for the escaped sleep
    finally:
        _kill_if_alive(escaped)


def test_a_command_that_leaves_a_daemon_behind_returns_when_it_exits(tmp_path: Path) -> None:
    daemon = tmp_path / "daemon.pid"
    code = (
        "import subprocess\n"
        f"open({str(daemon)!r}, 'w').write(str(subprocess.Popen(['sleep', '30']).pid))\n"
        "print('spawned')\n"
    )
    try:
        result = proc.run(_python(code), timeout_s=10)
        assert result.ok and result.stdout == b"spawned\n"
        assert result.duration_s < 5.0
        assert not _gone(int(daemon.read_text()))  # not a timeout: nothing is killed
    finally:
        _kill_if_alive(daemon)


# --- output --------------------------------------------------------------------------------------------


def test_output_is_capped_per_stream_and_says_so() -> None:
    code = "import sys\nsys.stdout.write('o' * 3000)\nsys.stderr.write('e' * 10)\n"  # under the disk bound
    result = proc.run(_python(code), timeout_s=10, max_output_bytes=1000)

    assert result.stdout == b"o" * 1000
    assert result.stderr == b"e" * 10
    assert result.truncated and result.returncode == 0

    whole = proc.run(_python(code), timeout_s=10, max_output_bytes=3000)
    assert len(whole.stdout) == 3000 and not whole.truncated


def test_a_runaway_writer_is_stopped_long_before_its_timeout_so_it_cannot_fill_the_disk() -> None:
    code = "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n"
    result = proc.run(_python(code), timeout_s=120, max_output_bytes=1_000_000)
    assert not result.timed_out and result.returncode is not None and result.returncode < 0
    assert result.truncated and len(result.stdout) == 1_000_000
    assert result.duration_s < 60  # stopped by the disk bound, not the 120 s timeout


def test_non_utf8_output_is_kept_as_bytes_and_decoded_with_replacement() -> None:
    code = (
        "import sys\nsys.stdout.buffer.write(b'caf\\xe9 \\xff ok\\n')\nsys.stderr.buffer.write(b'\\xfe!')\n"
    )
    result = proc.run(_python(code), timeout_s=10)

    assert result.stdout == b"caf\xe9 \xff ok\n"
    assert result.stdout_text == "caf\ufffd \ufffd ok\n"
    assert result.stderr_text == "\ufffd!"
    assert result.output == "caf\ufffd \ufffd ok\n\ufffd!"


def test_merged_stderr_lands_in_stdout_in_order() -> None:
    code = "import sys\nprint('one', flush=True)\nprint('two', file=sys.stderr, flush=True)\nprint('three')\n"
    result = proc.run(_python(code), timeout_s=10, merge_stderr=True)

    assert result.stdout == b"one\ntwo\nthree\n"
    assert result.stderr == b""


def test_input_reaches_the_command_and_a_command_that_never_reads_it_cannot_block() -> None:
    data = b"x" * (1024 * 1024) + b"\xff end"  # far beyond a pipe's buffer
    cat = proc.run(["cat"], timeout_s=10, input_bytes=data)
    assert cat.stdout == data

    deaf = proc.run(_python("print('did not read')"), timeout_s=5, input_bytes=data)
    assert deaf.ok and not deaf.timed_out


@pytest.mark.parametrize("die", [False, True], ids=["plain", "die_with_parent"])
def test_exit_code_cwd_and_duration_are_reported(tmp_path: Path, die: bool) -> None:
    code = "import os, sys\nprint(os.getcwd())\nsys.exit(4)"
    result = proc.run(_python(code), timeout_s=10, cwd=tmp_path, die_with_parent=die)

    assert result == ProcResult(
        (PY, "-c", "import os, sys\nprint(os.getcwd())\nsys.exit(4)"),
        4,
        f"{tmp_path.resolve()}\n".encode(),
        b"",
        False,
        result.duration_s,
    )
    assert not result.ok and result.duration_s > 0


# --- what cannot start is the caller's error, in plain words (the same with die_with_parent) ------------


@pytest.mark.parametrize("die", [False, True], ids=["plain", "die_with_parent"])
def test_a_missing_binary_raises_the_callers_error_class(tmp_path: Path, die: bool) -> None:
    with pytest.raises(SourceError, match=r"^command not found: /nonexistent/tool$"):
        proc.run(["/nonexistent/tool", "--flag"], timeout_s=5, error=SourceError, die_with_parent=die)
    with pytest.raises(GitError, match=r"command not found: no-such-tool-healbot \(cwd "):
        proc.run(["no-such-tool-healbot"], timeout_s=5, cwd=tmp_path, error=GitError, die_with_parent=die)
    with pytest.raises(HealbotError, match="command not found"):
        proc.run(["/nonexistent/tool"], timeout_s=5, die_with_parent=die)


@pytest.mark.parametrize("die", [False, True], ids=["plain", "die_with_parent"])
def test_a_non_executable_file_a_missing_cwd_and_an_empty_argv_are_named(tmp_path: Path, die: bool) -> None:
    script = tmp_path / "tool.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    with pytest.raises(ServiceError, match=f"command not executable: {script}"):
        proc.run([str(script)], timeout_s=5, error=ServiceError, die_with_parent=die)
    with pytest.raises(ServiceError, match=f"working directory not found: {tmp_path / 'gone'}"):
        proc.run([PY, "-V"], timeout_s=5, cwd=tmp_path / "gone", error=ServiceError, die_with_parent=die)
    with pytest.raises(ServiceError, match="empty command"):
        proc.run([], timeout_s=5, error=ServiceError, die_with_parent=die)


# --- the environment -------------------------------------------------------------------------------------


@pytest.mark.parametrize("die", [False, True], ids=["plain", "die_with_parent"])
def test_a_given_env_is_the_whole_environment_nothing_leaks(
    monkeypatch: pytest.MonkeyPatch, die: bool
) -> None:
    monkeypatch.setenv("HEALBOT_TELEGRAM_TOKEN", "123:leaked")
    monkeypatch.setenv("HEALBOT_PROC_TEST_MARKER", "leaked")
    env_binary = shutil.which("env")
    assert env_binary is not None

    scratch = proc.run([env_binary], timeout_s=10, env={"ONLY": "1"}, die_with_parent=die)
    assert scratch.stdout_text.splitlines() == ["ONLY=1"]

    inherited = proc.run([env_binary], timeout_s=10, die_with_parent=die)  # no env: the bot's own
    assert "HEALBOT_PROC_TEST_MARKER=leaked" in inherited.stdout_text.splitlines()


# --- the wrappers keep their contracts -------------------------------------------------------------------


def test_init_runner_survives_non_utf8_output() -> None:
    """Regression: `healbot init` decoded tool output strictly (text=True): one stray byte from docker or
    systemctl raised UnicodeDecodeError instead of listing services."""
    run = init.subprocess_runner(timeout_s=10)
    out = run(_python("import sys\nsys.stdout.buffer.write(b'[\\xff]')"), None)

    assert out == init.CommandOutput(0, "[\ufffd]", "")


def test_init_runner_answers_127_for_a_missing_tool_and_124_for_a_timeout() -> None:
    run = init.subprocess_runner(timeout_s=0.5)

    missing = run(["/nonexistent/docker", "ps"], None)
    assert missing.returncode == 127 and "command not found: /nonexistent/docker" in missing.stderr
    slow = run(_python("import time; time.sleep(30)"), None)
    assert slow == init.CommandOutput(124, "", f"{PY} did not answer within 0.5s")


# --- supervisor_rpc ---------------------------------------------------------------------------------------


class _CannedRpcServer:
    """A unix socket answering each connection with one canned XML-RPC response (or nothing at all)."""

    def __init__(self, path: Path, body: bytes | None) -> None:
        self.path = path
        self.body = body
        self.requests: list[bytes] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(4)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                request = b""
                while b"</methodCall>" not in request:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    request += chunk
                self.requests.append(request)
                if self.body is None:
                    self.stop.wait(5)  # a stalled supervisord: accepts, reads, never answers
                    continue
                head = (
                    f"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {len(self.body)}\r\n\r\n"
                )
                conn.sendall(head.encode() + self.body)

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        self.thread.join(timeout=10)
        self.path.unlink(missing_ok=True)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A unix socket path must stay under ~100 bytes; pytest's tmp_path can be longer."""
    with tempfile.TemporaryDirectory(prefix="hb-rpc-") as name:
        yield Path(name)


@contextmanager
def _serve(short_dir: Path, body: bytes | None) -> Iterator[_CannedRpcServer]:
    server = _CannedRpcServer(short_dir / "sv.sock", body)
    try:
        yield server
    finally:
        server.close()


def test_rpc_call_returns_the_answer_and_faults_keep_their_code(short_dir: Path) -> None:
    answer = xmlrpc.client.dumps(([{"name": "web", "group": "web"}],), methodresponse=True).encode()
    with _serve(short_dir, answer) as server:
        url = f"unix://{server.path}"
        assert supervisor_rpc.call(supervisor_rpc.strip_scheme(url), "getAllProcessInfo", timeout_s=5) == [
            {"name": "web", "group": "web"}
        ]
        assert b"<methodName>supervisor.getAllProcessInfo</methodName>" in server.requests[0]

    fault = xmlrpc.client.dumps(
        xmlrpc.client.Fault(supervisor_rpc.BAD_NAME, "BAD_NAME: nope"), methodresponse=True
    )
    with _serve(short_dir, fault.encode()) as server:
        with pytest.raises(supervisor_rpc.SupervisorFault, match="BAD_NAME: nope") as caught:
            supervisor_rpc.call(str(server.path), "getProcessInfo", "nope", timeout_s=5)
        assert caught.value.code == supervisor_rpc.BAD_NAME
        assert isinstance(caught.value, ServiceError)


def test_rpc_call_that_gets_no_answer_times_out_in_plain_words(short_dir: Path) -> None:
    with _serve(short_dir, None) as server:
        started = time.monotonic()
        with pytest.raises(ServiceError, match=r"did not answer getAllProcessInfo within 0.3s"):
            supervisor_rpc.call(str(server.path), "getAllProcessInfo", timeout_s=0.3)
        assert time.monotonic() - started < 3.0
        assert init.detect_supervisord(str(server.path), timeout_s=0.3) == []


def test_rpc_call_names_a_missing_and_a_stale_socket(short_dir: Path) -> None:
    with pytest.raises(ServiceError, match="not found: is supervisord running"):
        supervisor_rpc.call(str(short_dir / "none.sock"), "getAllProcessInfo", timeout_s=1)

    stale = short_dir / "stale.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(stale))
    sock.close()  # the file stays, nobody listens: what a crashed supervisord leaves
    with pytest.raises(ServiceError, match="refused the connection: supervisord is not running"):
        supervisor_rpc.call(str(stale), "getAllProcessInfo", timeout_s=1)


def test_strip_scheme_accepts_both_spellings() -> None:
    assert supervisor_rpc.strip_scheme("unix:///run/supervisor.sock") == "/run/supervisor.sock"
    assert supervisor_rpc.strip_scheme("/run/supervisor.sock") == "/run/supervisor.sock"
