"""SIGHUP reloads the config of a real `healbot run`: a valid file is applied (sources change at once),
restart-only keys are reported, an invalid file is refused and the old config keeps running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from bot.config import load_config
from bot.heartbeat import load_scans
from bot.reload import plan_reload
from tests.helpers import make_repo, wait_until

HEALBOT = str(Path(sys.executable).parent / "healbot")


class Run:
    """`healbot run --log-json` as a real process; stdout (the console channel) and stderr (logs) apart."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [HEALBOT, "run", "--log-json", "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._read, args=(stream, sink), daemon=True).start()

    @staticmethod
    def _read(stream: object, sink: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            sink.append(line)

    def stdout(self) -> str:
        return "".join(self.out)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)


def config_text(tmp: Path, repo: Path, logs: list[Path], extra: str = "") -> str:
    listed = ", ".join(f'"{p}"' for p in logs)
    return f"""
[healbot]
state_dir = "{tmp}/state"
poll_interval_s = 0.1
{extra}

[services.svc]
repo = "{repo}"
logs = [{listed}]

[services.svc.manager]
type = "command"
restart = ["true"]
"""


def watched(state_dir: Path) -> set[str]:
    return {s.source_id for s in load_scans(state_dir) or ()}


def test_sighup_applies_a_valid_config_and_keeps_the_old_one_when_invalid(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "svc", {"app.py": "x = 1\n"})
    first, second = tmp_path / "one.log", tmp_path / "two.log"
    first.write_text("start\n")
    second.write_text("start\n")
    state = tmp_path / "state"
    config = tmp_path / "healbot.toml"
    config.write_text(config_text(tmp_path, repo, [first]))
    run = Run(config)
    try:
        wait_until(lambda: watched(state) == {f"file:{first}"}, 20, what="the first scan")

        config.write_text(config_text(tmp_path, repo, [first, second], 'log_format = "json"'))
        run.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: watched(state) == {f"file:{first}", f"file:{second}"}, 20, what="the new source")
        wait_until(lambda: "config reloaded: services.svc" in run.stdout(), 10, what="the reload report")
        assert "needs a restart to take effect: log_format" in run.stdout()

        config.write_text(config_text(tmp_path, repo, [second], "max_samples = -1"))
        run.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "config reload failed" in run.stdout(), 10, what="the refusal")
        assert "still running the previous config" in run.stdout() and "healbot.max_samples" in run.stdout()
        assert run.proc.poll() is None
        assert watched(state) == {f"file:{first}", f"file:{second}"}  # nothing of the bad file applied

        config.write_text(config_text(tmp_path, repo, [second]))  # fixed: the next SIGHUP applies it
        run.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: watched(state) == {f"file:{second}"}, 20, what="the source removed")
    finally:
        assert run.stop() == 0, run.stdout() + "".join(run.err)
    logs = [json.loads(line) for line in run.err if line.strip()]  # --log-json: every line is JSON
    assert any(e["level"] == "ERROR" and "config reload failed" in e["message"] for e in logs)
    assert any("config reloaded" in e["message"] for e in logs)


def test_plan_keeps_restart_only_values_and_names_what_changed(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "svc", {"app.py": "x = 1\n"})
    path = tmp_path / "healbot.toml"
    path.write_text(config_text(tmp_path, repo, [tmp_path / "a.log"]))
    running = load_config(path)
    path.write_text(
        config_text(
            tmp_path,
            repo,
            [tmp_path / "b.log"],
            f'state_dir = "{tmp_path}/elsewhere"\nhost_name = "web9"\ndiagnose_every_s = 60\n'
            '[claude]\nmodel = "other"\n[approval]\nexpiry_minutes = 5\nreminder_minutes_before = 1',
        ).replace(f'state_dir = "{tmp_path}/state"\n', "")
    )
    plan = plan_reload(running, load_config(path))
    assert plan.config.state_dir == running.state_dir and plan.config.host_name == running.host_name
    assert plan.config.claude == running.claude
    assert plan.config.diagnose_every_s == 60 and plan.config.approval.expiry_s == 300
    assert plan.config.services["svc"].logs == (tmp_path / "b.log",)
    assert set(plan.needs_restart) == {"state_dir", "host_name", "claude"}
    assert set(plan.applied) == {
        "diagnose_every_s",
        "approval.expiry_s",
        "approval.reminder_before_s",
        "services.svc",
    }
    unchanged = plan_reload(running, running)
    assert unchanged.summary() == "config reloaded: nothing changed"
    assert plan.summary().startswith("config reloaded: diagnose_every_s, approval.expiry_s")
