"""deploy/Dockerfile and deploy/compose.yaml: docker cannot build here, so their key claims are checked."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
MAKEFILE_SDK = re.search(r"CLAUDE_SDK_VERSION := (\S+)", (REPO_ROOT / "Makefile").read_text())


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", path.read_text())
    rows = []
    for raw in joined.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            rows.append((keyword.upper(), rest.strip()))
    return rows


def test_dockerfile_base_is_pinned_and_user_is_not_root() -> None:
    rows = instructions(DEPLOY / "Dockerfile")
    base = [args for keyword, args in rows if keyword == "FROM"]
    assert base == ["python:3.11.11-slim-bookworm"]  # a full version tag, never `latest` or a bare 3.11
    users = [args for keyword, args in rows if keyword == "USER"]
    assert users, "no USER: the container would run as root"
    assert users[-1] not in ("root", "0", "0:0")
    last_user = max(i for i, (keyword, _) in enumerate(rows) if keyword == "USER")
    assert all(keyword != "RUN" for keyword, _ in rows[last_user:]), "RUN after USER needs root"


def test_dockerfile_pins_the_claude_binary_to_the_tested_version() -> None:
    assert MAKEFILE_SDK is not None
    rows = instructions(DEPLOY / "Dockerfile")
    assert ("ARG", f"CLAUDE_SDK_VERSION={MAKEFILE_SDK.group(1)}") in rows
    runs = " ".join(args for keyword, args in rows if keyword == "RUN")
    assert "--no-deps --target /opt/claude" in runs
    assert '"claude-agent-sdk==${CLAUDE_SDK_VERSION}"' in runs
    for package in re.findall(r"apt-get install -y --no-install-recommends ([^&]+)", runs)[0].split():
        assert "=" in package, f"apt package {package} is not pinned"


def test_dockerfile_has_a_healthcheck_and_exec_form_entrypoint() -> None:
    rows = dict(instructions(DEPLOY / "Dockerfile"))
    assert "HEALTHCHECK" in rows
    assert rows["HEALTHCHECK"].endswith('CMD ["healbot", "doctor", "-c", "/etc/healbot/healbot.toml"]')
    assert json.loads(rows["ENTRYPOINT"])[0] == "/usr/bin/tini"  # exec form: SIGTERM reaches healbot
    assert json.loads(rows["CMD"]) == ["run", "-c", "/etc/healbot/healbot.toml"]


def test_dockerfile_copies_everything_the_wheel_needs() -> None:
    copied = {args.split()[0] for keyword, args in instructions(DEPLOY / "Dockerfile") if keyword == "COPY"}
    assert {"pyproject.toml", "bot", "healers", "prompts"} <= copied


def test_compose_mounts_repos_state_config_and_manager_socket() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    assert "dockerfile: deploy/Dockerfile" in text
    assert 'user: "10001:10001"' in text
    assert "useradd --create-home --uid 10001" in (DEPLOY / "Dockerfile").read_text()
    for mount in (
        "./healbot.toml:/etc/healbot/healbot.toml:ro",
        "healbot-state:/var/lib/healbot",
        "/srv/web:/srv/web",
        "/run/supervisor.sock:/run/supervisor.sock",
    ):
        assert f"- {mount}" in text
    assert "no-new-privileges:true" in text
    assert "TOKEN=" not in text  # secrets come from env_file, never the compose file


def test_dockerfile_passes_hadolint() -> None:
    """hadolint (pinned in the dev extras) finds nothing, not even an info-level note."""
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.is_file(), f"hadolint missing at {hadolint}: run `make install`"
    linted = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "info", str(DEPLOY / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_hadolint_would_catch_an_unpinned_base(tmp_path: Path) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\n")
    linted = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "info", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert linted.returncode != 0
    assert "DL3007" in linted.stdout  # "Using latest is prone to errors"
