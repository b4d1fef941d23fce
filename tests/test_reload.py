"""SIGHUP reloads the config of a real `healbot run`: a valid file is applied (sources change at once),
restart-only keys are reported, an invalid file is refused and the old config keeps running."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from bot.config import load_config
from bot.heartbeat import load_scans
from bot.reload import plan_reload
from tests.fakes.daemon_proc import StartDaemon, healbot_run_fixture
from tests.fakes.world import TomlValue, healbot_toml
from tests.helpers import make_repo, wait_until

__all__ = ["healbot_run_fixture"]  # the fixture


def config_text(tmp: Path, repo: Path, logs: list[Path], **healbot: TomlValue) -> str:
    return healbot_toml(tmp / "state", repo, logs, healbot={"poll_interval_s": 0.1, **healbot})


def watched(state_dir: Path) -> set[str]:
    return {s.source_id for s in load_scans(state_dir) or ()}


def test_sighup_applies_a_valid_config_and_keeps_the_old_one_when_invalid(
    tmp_path: Path, healbot_run: StartDaemon
) -> None:
    repo = make_repo(tmp_path / "svc", {"app.py": "x = 1\n"})
    first, second = tmp_path / "one.log", tmp_path / "two.log"
    first.write_text("start\n")
    second.write_text("start\n")
    state = tmp_path / "state"
    config = tmp_path / "healbot.toml"
    config.write_text(config_text(tmp_path, repo, [first]))
    run = healbot_run(config, "--log-json", merge_stderr=False)
    try:
        wait_until(lambda: watched(state) == {f"file:{first}"}, 20, what="the first scan")

        config.write_text(config_text(tmp_path, repo, [first, second], log_format="json"))
        run.signal(signal.SIGHUP)
        wait_until(lambda: watched(state) == {f"file:{first}", f"file:{second}"}, 20, what="the new source")
        run.wait_for("config reloaded: services.svc", 10, what="the reload report")
        assert "needs a restart to take effect: log_format" in run.output()

        config.write_text(config_text(tmp_path, repo, [second], max_samples=-1))
        run.signal(signal.SIGHUP)
        run.wait_for("config reload failed", 10, what="the refusal")
        assert "still running the previous config" in run.output() and "healbot.max_samples" in run.output()
        assert run.running()
        assert watched(state) == {f"file:{first}", f"file:{second}"}  # nothing of the bad file applied

        config.write_text(config_text(tmp_path, repo, [second]))  # fixed: the next SIGHUP applies it
        run.signal(signal.SIGHUP)
        wait_until(lambda: watched(state) == {f"file:{second}"}, 20, what="the source removed")
    finally:
        assert run.stop() == 0, run.output() + run.errors()
    logs = [json.loads(line) for line in run.err_lines if line.strip()]  # --log-json: every line is JSON
    assert any(e["level"] == "ERROR" and "config reload failed" in e["message"] for e in logs)
    assert any("config reloaded" in e["message"] for e in logs)


def test_plan_keeps_restart_only_values_and_names_what_changed(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "svc", {"app.py": "x = 1\n"})
    path = tmp_path / "healbot.toml"
    path.write_text(config_text(tmp_path, repo, [tmp_path / "a.log"]))
    running = load_config(path)
    path.write_text(
        healbot_toml(
            tmp_path / "elsewhere",
            repo,
            [tmp_path / "b.log"],
            healbot={"poll_interval_s": 0.1, "host_name": "web9", "diagnose_every_s": 60},
            claude={"model": "other"},
            tables={"approval": {"expiry_minutes": 5, "reminder_minutes_before": 1}},
        )
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
