"""Where the sandbox cannot be set up the check is not run, and cards, console and doctor say why."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.interfaces import SandboxSettings
from bot.models import Incident, IncidentState, Proposal, ProposalStatus
from bot.render import candidate_line
from bot.telegram import cards
from tests.fakes.daemon_proc import HEALBOT
from tests.fakes.hostile_check import (  # noqa: F401 (the repo and marker fixtures)
    bwrap_binary,
    context,
    hostile,
    marker_fixture,
    propose,
    repo_fixture,
)
from tests.fakes.world import toml_table


@pytest.mark.parametrize(
    ("settings", "why"),
    [
        (
            SandboxSettings(bwrap="/nonexistent/bwrap"),
            "bwrap not found: '/nonexistent/bwrap' (install bubblewrap",
        ),
        (SandboxSettings(bwrap="healbot-no-such-bwrap"), "bwrap not found: 'healbot-no-such-bwrap'"),
        (SandboxSettings(bwrap="/bin/false"), "bwrap cannot set up the sandbox here"),
    ],
)
def test_check_is_not_run_where_the_sandbox_cannot_be_set_up(
    repo: Path, tmp_path: Path, marker: str, settings: SandboxSettings, why: str
) -> None:
    ran = tmp_path / "ran.txt"
    code = f"open({str(ran)!r}, 'w').write('ran')\n"
    candidate = propose(repo, context(repo, marker, sandbox=settings), hostile(code))
    assert candidate.check_passed is None
    assert candidate.check_output.startswith("check not run: sandbox unavailable: ")
    assert why in candidate.check_output
    assert not ran.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can be asked to drop to a missing user")
def test_check_is_not_run_when_the_sandbox_user_is_missing(repo: Path, marker: str) -> None:
    ctx = context(repo, marker, sandbox=SandboxSettings(bwrap=bwrap_binary(), user="healbot-no-such-user"))
    candidate = propose(repo, ctx, hostile("print(1)"))
    assert candidate.check_passed is None
    assert "sandbox.user 'healbot-no-such-user' does not exist" in candidate.check_output


# --- where the operator sees it ----------------------------------------------------------------------


def test_cards_and_console_say_the_check_was_not_run_and_why(repo: Path, marker: str) -> None:
    ctx = context(repo, marker, sandbox=SandboxSettings(bwrap="/nonexistent/bwrap"))
    candidate = propose(repo, ctx, hostile("print(1)"))
    line = candidate_line(candidate)
    assert "check not run: sandbox unavailable: bwrap not found" in line
    assert "check passed" not in line
    now = time.time()
    incident = Incident(1, "svc", "fp", "KeyError", IncidentState.AWAITING_APPROVAL, now, now, 1, ("x",))
    proposal = Proposal(7, 1, "tok", "c0ffee" * 6, (candidate,), now, now + 60, ProposalStatus.PENDING)
    card = cards.build_card(incident, proposal, [], diffs_inline=True)
    assert "check not run: sandbox unavailable: bwrap not found" in card.text
    assert "check passed" not in card.text


def doctor(tmp_path: Path, repo: Path, bwrap: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "healbot.toml"
    cfg.write_text(
        toml_table("claude", {"binary": tmp_path / "no-such-claude"})
        + toml_table("sandbox", {"bwrap": bwrap})
        + toml_table("services.shop", {"repo": repo, "check_command": [sys.executable, "-c", "pass"]})
        + toml_table("services.shop.manager", {"type": "command", "restart": ["true"]})
    )
    return subprocess.run(
        [HEALBOT, "doctor", "-c", str(cfg)], capture_output=True, text=True, timeout=120, check=False
    )


def test_doctor_says_whether_the_check_runs_sandboxed_and_how_to_fix_it(tmp_path: Path, repo: Path) -> None:
    works = doctor(tmp_path, repo, bwrap_binary())
    assert "✓ shop: check_command runs sandboxed (bubblewrap)" in works.stdout, works.stdout
    missing = doctor(tmp_path, repo, str(tmp_path / "no-bwrap"))
    assert (
        f"✗ shop: check_command will not run: bwrap not found: '{tmp_path / 'no-bwrap'}' "
        "(install bubblewrap (apt-get install bubblewrap), or set sandbox.bwrap to its path)"
    ) in missing.stdout, missing.stdout
    assert missing.returncode == 1
