from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may read or write the developer's real home (claude login, ~/.pm2, git config)."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Test")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "test@example.invalid")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Test")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "test@example.invalid")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("HEALBOT_TELEGRAM_TOKEN", raising=False)
    bwrap = os.environ.get("HEALBOT_BWRAP_BIN")
    if bwrap:  # as an operator's installed bubblewrap would be: check commands run sandboxed
        monkeypatch.setenv("PATH", f"{Path(bwrap).parent}{os.pathsep}{os.environ.get('PATH', '')}")


def claude_binary() -> str | None:
    path = os.environ.get("HEALBOT_CLAUDE_BIN")
    if path and os.access(path, os.X_OK):
        return path
    candidates = sorted(REPO_ROOT.glob(".cache/claude-cli-*/claude_agent_sdk/_bundled/claude"))
    return str(candidates[-1]) if candidates else None


def pm2_binary() -> str | None:
    path = os.environ.get("HEALBOT_PM2_BIN") or str(REPO_ROOT / "tests/tools/node_modules/.bin/pm2")
    return path if os.access(path, os.X_OK) else None


from tests.fakes.docker_env import docker  # noqa: E402,F401  (session fixture: one real dockerd per run)
from tests.fakes.systemd_env import systemd  # noqa: E402,F401  (session fixture: one real systemd per run)
