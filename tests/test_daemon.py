"""`healbot run` as a real process: it scans, proposes, survives a restart without losing anything, and stops
cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bot.demo.fake_messages_api import FakeMessagesApi
from bot.models import IncidentState
from bot.store import Store
from tests.conftest import claude_binary
from tests.helpers import make_repo, wait_until

pytestmark = pytest.mark.real_cli

HEALBOT = str(Path(sys.executable).parent / "healbot")
APP = 'PRICES = {"apple": 1}\n\n\ndef total(name):\n    return PRICES[name]\n'
ANSWER = {
    "summary": "unknown items raise KeyError",
    "candidates": [
        {
            "title": "Default unknown prices to 0",
            "rationale": "PRICES[name] raises for unknown names",
            "risk": "low",
            "kind": "patch",
            "edits": [{"path": "app.py", "old": "return PRICES[name]", "new": "return PRICES.get(name, 0)"}],
        }
    ],
}


class Daemon:
    def __init__(self, config: Path) -> None:
        env = {**os.environ, "ANTHROPIC_API_KEY": "test", "CLAUDE_CODE_MAX_RETRIES": "0"}
        self.proc = subprocess.Popen(
            [HEALBOT, "run", "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)


def test_run_proposes_then_a_restart_loses_nothing_and_sigterm_stops_it(tmp_path: Path) -> None:
    binary = claude_binary() or pytest.fail("claude binary missing: run `make tools`")
    repo = make_repo(tmp_path / "svc", {"app.py": APP})
    log = tmp_path / "svc.log"
    log.write_text("old error before the first start, never reported: ERROR boom\n")
    with FakeMessagesApi(structured=ANSWER) as fake:
        config = tmp_path / "healbot.toml"
        config.write_text(
            f"""
[healbot]
state_dir = "{tmp_path}/state"
poll_interval_s = 0.1

[claude]
binary = "{binary}"
base_url = "{fake.url}"
pass_env = ["ANTHROPIC_API_KEY", "CLAUDE_CODE_MAX_RETRIES"]

[services.svc]
repo = "{repo}"
logs = ["{log}"]

[services.svc.manager]
type = "command"
restart = ["true"]
"""
        )
        daemon = Daemon(config)
        try:
            wait_until((tmp_path / "state" / "healbot.db").exists, 20, what="the store")
            store = Store.open(tmp_path / "state" / "healbot.db")
            wait_until(lambda: store.get_cursor(f"file:{log}"), 20, what="the first cursor")
            with log.open("a") as handle:
                handle.write(
                    "2026-11-26 06:00:00,000 ERROR svc[1]: request failed\nTraceback (most recent call last):\n"
                    f"  File \"{repo}/app.py\", line 5, in total\n    return PRICES[name]\nKeyError: 'pear'\n"
                    "INFO next request fine\n"
                )
            wait_until(lambda: "+    return PRICES.get(name, 0)" in daemon.output(), 60, what="the proposal")
            assert "billed per token" in daemon.output()  # ANTHROPIC_API_KEY passed on purpose: warned loudly
        finally:
            assert daemon.stop() == 0, daemon.output()
        [incident] = store.incidents()
        assert incident.state is IncidentState.AWAITING_APPROVAL
        assert "old error" not in daemon.output()

        again = Daemon(config)
        try:
            wait_until(
                lambda: "+    return PRICES.get(name, 0)" in again.output(), 30, what="the proposal again"
            )
        finally:
            assert again.stop() == 0, again.output()
        assert len(store.incidents()) == 1
        assert len(store.diagnoses(incident.id)) == 1  # presented again, not diagnosed again
        assert len(fake.message_requests()) == 1
        store.close()


def test_sigterm_during_start_up_still_stops_cleanly(tmp_path: Path) -> None:
    """Regression: the handlers were installed only after the daemon was built, so a SIGTERM that came
    while the store was opening killed the process with the default action (exit -15)."""
    repo = make_repo(tmp_path / "svc", {"app.py": APP})
    config = tmp_path / "healbot.toml"
    config.write_text(
        f"""
[healbot]
state_dir = "{tmp_path}/state"

[services.svc]
repo = "{repo}"
logs = ["{tmp_path}/svc.log"]

[services.svc.manager]
type = "command"
restart = ["true"]
"""
    )
    daemon = Daemon(config)
    wait_until((tmp_path / "state" / "healbot.db").exists, 20, what="the store being opened")
    assert daemon.stop() == 0, daemon.output()
