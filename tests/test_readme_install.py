"""The README's install block, run line by line by a new operator in a scratch file system (see
tests/walkthrough/readme_install.py): from `pipx install .` to a systemd-managed bot posting cards."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.runner.claude_cli import INSTALL_HINT
from tests.conftest import REPO_ROOT
from tests.walkthrough.fake_systemd import EMULATED, NOT_EMULATED, UnitError, parse_unit
from tests.walkthrough.readme_install import CHAT_ID, readme_chunks

WHEELHOUSE = Path(os.environ.get("HEALBOT_WHEELHOUSE") or REPO_ROOT / ".cache" / "wheelhouse")


def test_readme_block_has_the_four_steps_starting_with_pipx() -> None:
    chunks = readme_chunks((REPO_ROOT / "README.md").read_text())
    assert len(chunks) == 4
    assert chunks[0][0] == "pipx install ."
    assert any("systemctl enable --now healbot" in line for line in chunks[3])


def test_fake_systemd_knows_every_key_of_the_shipped_unit() -> None:
    unit = parse_unit(REPO_ROOT / "deploy" / "healbot.service")
    assert unit.value("User") == "healbot"
    assert {key for _, key, _ in unit.entries} <= set().union(*EMULATED.values(), *NOT_EMULATED.values())


def test_fake_systemd_refuses_a_key_it_does_not_know(tmp_path: Path) -> None:
    unit = tmp_path / "x.service"
    unit.write_text("[Service]\nExecStart=/bin/true\nDynamicUser=yes\n")
    with pytest.raises(UnitError, match="DynamicUser is neither emulated"):
        parse_unit(unit)


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("the walkthrough needs root and unshare(1) for its private mount namespace")
    if not (WHEELHOUSE / ".stamp").exists():
        pytest.fail(f"wheelhouse missing at {WHEELHOUSE}: run `make tools`")
    scratch = tmp_path_factory.mktemp("walkthrough")
    report = scratch / "report.json"
    done = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            sys.executable,
            "-m",
            "tests.walkthrough.readme_install",
            "--scratch",
            str(scratch / "world"),
            "--wheelhouse",
            str(WHEELHOUSE),
            "--report",
            str(report),
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
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
    assert ran[: len(readme_lines)] == readme_lines  # every README line, in order, nothing skipped
    checks = walkthrough["checks"]
    assert checks["daemon_user"] == "healbot"
    interpreter, *argv = checks["daemon_cmdline"].split()
    assert interpreter.startswith("/opt/healbot/bin/python")  # the unit's venv, not the pipx one
    assert argv == ["/opt/healbot/bin/healbot", "run", "--config", "/etc/healbot/healbot.toml"]
    mounts = checks["daemon_mounts"]  # the unit's hardening, as the daemon's own mount namespace shows it
    access = {point: mounts[point].split()[1] for point in mounts}
    assert access == {  # ProtectSystem=strict with ReadWritePaths=/var/lib/healbot /srv
        "/": "ro",
        "/etc": "ro",
        "/opt": "ro",
        "/srv": "rw",
        "/var/lib/healbot": "rw",
        "/tmp": "rw",
    }, mounts
    assert mounts["/tmp"].startswith("tmpfs")  # PrivateTmp=true
    assert checks["state_owner"] == "healbot"
    assert checks["state_dir_mode"] == "0o750"
    assert checks["exit_status"] == 0  # SIGTERM from `systemctl stop`: a clean shutdown


@pytest.mark.slow
def test_init_found_the_supervisord_service_and_doctor_names_only_the_missing_claude(
    walkthrough: dict[str, Any],
) -> None:
    assert walkthrough["failure"] is None, explain(walkthrough)
    doctor = walkthrough["checks"]["doctor"]
    assert "✓ shop: supervisord reachable" in doctor
    assert "✓ shop: file:/var/log/supervisor/shop.err.log: ok" in doctor, doctor
    problems = [line for line in doctor.splitlines() if line.startswith("✗")]
    assert problems == [f"✗ claude binary 'claude' not found (fix: {INSTALL_HINT})"], doctor


@pytest.mark.slow
def test_the_running_bot_posts_the_services_error_reloads_and_reports_status(
    walkthrough: dict[str, Any],
) -> None:
    assert walkthrough["failure"] is None, explain(walkthrough)
    checks = walkthrough["checks"]
    assert "ZeroDivisionError" in checks["card"] and "shop" in checks["card"]
    assert "config reloaded" in checks["journal"]
    assert "shop" in checks["status"]
    assert str(CHAT_ID).startswith("-100")
