"""`healbot run` as a real process, the way an operator starts it: the installed console script of this
interpreter, its own process group, its output collected line by line, and that group killed by pid if a
test ends while it still runs (use the `healbot_run` fixture, or call `close()` yourself)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO

import pytest

from tests.helpers import wait_until

HEALBOT = str(Path(sys.executable).parent / "healbot")
# What a daemon needs to run the real claude binary against the fake Messages API; its config lists both
# names in `claude.pass_env` (see tests.fakes.world.claude_via_fake_api).
FAKE_CLAUDE_ENV = {"ANTHROPIC_API_KEY": "test", "CLAUDE_CODE_MAX_RETRIES": "0"}
STOP_TIMEOUT_S = 20.0


class DaemonProcess:
    """`healbot run [options] -c config`. With `merge_stderr` its logs come in `output()` with the console
    channel; without, they come apart in `errors()`. `env` adds to this process's environment; a None value
    removes the name."""

    def __init__(
        self,
        config: Path,
        *options: str,
        env: Mapping[str, str | None] | None = None,
        merge_stderr: bool = True,
    ) -> None:
        environ = dict(os.environ)
        for name, value in (env or {}).items():
            if value is None:
                environ.pop(name, None)
            else:
                environ[name] = value
        self.proc = subprocess.Popen(
            [HEALBOT, "run", *options, "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
            text=True,
            env=environ,
            start_new_session=True,
        )
        self.out_lines: list[str] = []
        self.err_lines: list[str] = []
        self._readers = [self._reader(self.proc.stdout, self.out_lines)]
        if not merge_stderr:
            self._readers.append(self._reader(self.proc.stderr, self.err_lines))

    @staticmethod
    def _reader(stream: IO[str] | None, sink: list[str]) -> threading.Thread:
        assert stream is not None

        def read() -> None:
            for line in stream:
                sink.append(line)

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        return thread

    def output(self) -> str:
        return "".join(self.out_lines)

    def errors(self) -> str:
        return "".join(self.err_lines)

    def running(self) -> bool:
        return self.proc.poll() is None

    def _finished(self) -> bool:
        return not self.running() and not any(r.is_alive() for r in self._readers)

    def wait_for(self, text: str, timeout: float = 20.0, what: str = "") -> None:
        """Until `text` is in the output; fails at once (with the output) if the daemon exits without it."""

        def said() -> bool:
            if text in self.output():
                return True
            if self._finished():
                raise AssertionError(
                    f"healbot exited ({self.proc.returncode}) before saying {text!r}:\n{self.output()}"
                )
            return False

        wait_until(said, timeout, what=what or repr(text))

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Its exit code, once it ended by itself."""
        code = self.proc.wait(timeout=timeout)
        self._drain()
        return code

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM (unless it already ended), then its exit code; its group is killed if it did not end."""
        try:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(timeout=timeout)
        finally:
            self.close()

    def close(self) -> None:
        """Kill the process group if the daemon still runs (by its pid, never by name), reap it, read the rest."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._drain()

    def _drain(self) -> None:
        for reader in self._readers:
            reader.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None and not any(r.is_alive() for r in self._readers):
                stream.close()


StartDaemon = Callable[..., DaemonProcess]


@pytest.fixture(name="healbot_run")
def healbot_run_fixture() -> Iterator[StartDaemon]:
    """`healbot_run(config, *options, env=..., merge_stderr=...)` starts a DaemonProcess; every one still
    running at teardown has its process group killed."""
    started: list[DaemonProcess] = []

    def start(
        config: Path,
        *options: str,
        env: Mapping[str, str | None] | None = None,
        merge_stderr: bool = True,
    ) -> DaemonProcess:
        daemon = DaemonProcess(config, *options, env=env, merge_stderr=merge_stderr)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.close()
