"""The README's install block, run line by line by a new operator on the session's real systemd (see
tests/walkthrough/readme_install.py): from `pipx install .` to the bot running under deploy/healbot.service
with its hardening, posting cards, restarted by `Restart=`, reloaded and stopped by systemctl."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from bot.runner.claude_cli import INSTALL_HINT
from tests.conftest import REPO_ROOT, claude_binary
from tests.fakes.systemd_env import SystemdEnv, sudo_package
from tests.walkthrough.readme_install import CHAT_ID, DIAGNOSIS_SUMMARY, HOME_SECRET, readme_chunks

pytestmark = pytest.mark.timeout(600)  # the module's walkthrough: pip installs, a claude run, RestartSec=10
WHEELHOUSE = Path(os.environ.get("HEALBOT_WHEELHOUSE") or REPO_ROOT / ".cache" / "wheelhouse")


def test_readme_block_has_the_four_steps_starting_with_pipx() -> None:
    chunks = readme_chunks((REPO_ROOT / "README.md").read_text())
    assert len(chunks) == 4
    assert chunks[0][0] == "pipx install ."
    assert any("systemctl enable --now healbot" in line for line in chunks[3])


@pytest.fixture(scope="module")
def walkthrough(systemd: SystemdEnv) -> dict[str, Any]:
    """The README block run inside the session's systemd namespaces (its overlays keep it off the host)."""
    if not (WHEELHOUSE / ".stamp").exists():
        pytest.fail(f"wheelhouse missing at {WHEELHOUSE}: run `make tools`")
    sudo = sudo_package() or pytest.fail("Debian's sudo is not unpacked: run `make tools`")
    claude = claude_binary() or pytest.fail("claude binary missing: run `make tools`")
    systemd.install_sudo(sudo)
    scratch = Path(tempfile.mkdtemp(prefix="walkthrough-", dir=systemd.shared))
    report = scratch / "report.json"
    done = systemd.run(
        "env",
        f"PYTHONPATH={REPO_ROOT}",
        sys.executable,
        "-m",
        "tests.walkthrough.readme_install",
        "--scratch",
        str(scratch / "world"),
        "--wheelhouse",
        str(WHEELHOUSE),
        "--claude",
        claude,
        "--report",
        str(report),
        check=False,
        timeout=480,
    )
    assert report.exists(), done.stdout + done.stderr
    result: dict[str, Any] = json.loads(report.read_text())
    result["runner_output"] = done.stdout + done.stderr
    return result


def explain(result: dict[str, Any]) -> str:
    lines = [f"failure: {result['failure']}"]
    for step in result["steps"]:
        lines.append(f"$ {step['line']}  → {step['returncode']}\n{step['output']}")
    lines.append("journal:\n" + str(result["checks"].get("journal", "")))
    lines.append("bot API calls:\n" + "\n".join(result["checks"].get("bot_api_calls", [])))
    lines.append(result["runner_output"])
    return "\n".join(lines)


@pytest.mark.slow
def test_every_readme_line_runs_and_the_bot_comes_up_under_its_unit(walkthrough: dict[str, Any]) -> None:
    assert walkthrough["failure"] is None, explain(walkthrough)
    ran = [step["line"] for step in walkthrough["steps"]]
    readme_lines = [line for chunk in readme_chunks((REPO_ROOT / "README.md").read_text()) for line in chunk]
    not_readme = [line for line in ran if line not in readme_lines]
    assert [line for line in ran if line in readme_lines][
        : len(readme_lines)
    ] == readme_lines  # all, in order
    assert not_readme[0].endswith("| sudo tee -a /etc/healbot/env >/dev/null")  # the fake's API key, listed:
    assert not_readme[0] in walkthrough["checks"]["not_from_readme"]
    checks = walkthrough["checks"]
    assert checks["daemon_user"] == "healbot"
    interpreter, *argv = checks["daemon_cmdline"].split()
    assert interpreter.startswith("/opt/healbot/bin/python")  # the unit's venv, not the pipx one
    assert argv == ["/opt/healbot/bin/healbot", "run", "--config", "/etc/healbot/healbot.toml", "--log-json"]
    assert checks["state_owner"] == "healbot"
    assert checks["state_dir_mode"] == "0o750"  # StateDirectoryMode=


@pytest.mark.slow
def test_the_units_hardening_is_in_force_for_the_running_daemon(walkthrough: dict[str, Any]) -> None:
    assert walkthrough["failure"] is None, explain(walkthrough)
    checks = walkthrough["checks"]
    writes = checks["writes"]  # as the healbot user, in the daemon's own mount namespace
    assert "Read-only file system" in writes["/etc/healbot/probe"]  # its own dir, but not in ReadWritePaths=
    assert writes["/srv/shop/probe"] == "ok"
    mounts = checks["daemon_mounts"]
    access = {point: mounts[point].split()[1] for point in mounts}
    assert access == {
        "/": "ro",
        "/etc": "ro",
        "/opt": "ro",
        "/srv": "rw",
        "/var/lib/healbot": "rw",
        "/tmp": "rw",
    }
    assert mounts["/tmp"].startswith("tmpfs")  # PrivateTmp=true
    assert HOME_SECRET.parent.name in checks["home_seen_by_admin"]
    assert checks["home_seen_by_daemon"] == []  # ProtectHome=true
    assert checks["no_new_privs"] == "1"


@pytest.mark.slow
def test_init_found_the_supervisord_service_and_doctor_names_only_the_missing_claude(
    walkthrough: dict[str, Any],
) -> None:
    assert walkthrough["failure"] is None, explain(walkthrough)
    doctor = walkthrough["checks"]["doctor"]
    assert "✓ config healbot.toml: 2 service(s)" in doctor  # shop and web; not journald, dbus, ... too
    assert "✓ shop: supervisord reachable" in doctor
    assert "✓ web: systemd reachable" in doctor and "✓ web: journald:web.service: ok" in doctor
    assert "✓ shop: file:/var/log/supervisor/shop.err.log: ok" in doctor, doctor
    problems = [line for line in doctor.splitlines() if line.startswith("✗")]
    assert problems == [f"✗ claude binary 'claude' not found (fix: {INSTALL_HINT})"], doctor


@pytest.mark.slow
def test_the_bot_posts_claudes_diagnosis_survives_kill_9_reloads_and_stops_with_nothing_lost(
    walkthrough: dict[str, Any],
) -> None:
    assert walkthrough["failure"] is None, explain(walkthrough)
    checks = walkthrough["checks"]
    assert "ZeroDivisionError" in checks["card"] and "shop" in checks["card"]
    assert DIAGNOSIS_SUMMARY in checks["card"]  # the real claude binary, against the fake Messages API
    assert str(CHAT_ID).startswith("-100")
    assert checks["after_kill"]["NRestarts"] == "1"  # Restart=on-failure
    assert checks["cards_posted"] == 1  # the restarted daemon did not post the incident again
    before, after = checks["pid_after_reload"]  # reloaded at once after coming back: Type=notify
    assert before == after == int(checks["after_kill"]["MainPID"])
    assert "config reloaded" in checks["journal"]  # ExecReload= is SIGHUP, no restart
    assert checks["after_stop"] == {  # SIGTERM from `systemctl stop`: a clean exit 0
        "ActiveState": "inactive",
        "Result": "success",
        "ExecMainCode": "1",
        "ExecMainStatus": "0",
    }
    assert checks["integrity"] == "ok"
    for status in (checks["status"], checks["status_after_stop"]):
        assert "[shop] awaiting_approval 1× ZeroDivisionError" in status, status


@pytest.mark.slow
def test_an_approved_restart_of_a_systemd_unit_runs_from_the_hardened_unit_through_polkit(
    walkthrough: dict[str, Any],
) -> None:
    assert walkthrough["failure"] is None, explain(walkthrough)
    checks = walkthrough["checks"]
    assert "web" in checks["web_card"] and "KeyError" in checks["web_card"]
    before, after = checks["web_pids"]  # healbot's `systemctl restart web.service`, as the healbot user
    assert before != after
    assert "Approve #1" not in checks["web_card_after"]


@pytest.mark.slow
def test_every_journal_line_of_the_daemon_is_the_json_log_json_promises(walkthrough: dict[str, Any]) -> None:
    assert walkthrough["failure"] is None, explain(walkthrough)
    entries = walkthrough["checks"]["journal_json"]
    assert len(entries) >= 5
    records = [json.loads(entry["MESSAGE"]) for entry in entries]  # each MESSAGE one JSON object
    assert all({"ts", "level", "logger", "message"} <= set(record) for record in records), records
    assert {entry["SYSLOG_IDENTIFIER"] for entry in entries} == {"healbot"}
    messages = [record["message"] for record in records]
    assert any(m.startswith("healbot running: 2 service(s)") for m in messages), messages
    assert any("config reloaded" in m for m in messages), messages
