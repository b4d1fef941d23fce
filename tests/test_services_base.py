"""The one "can this binary be started" check that every command-line service manager's `check()` uses."""

from __future__ import annotations

import sys
from pathlib import Path

from healers.services.base import missing_binary
from healers.services.docker import DockerManager


def test_a_runnable_path_or_name_on_the_path_is_not_missing() -> None:
    assert missing_binary(sys.executable, label="python", hint="-") is None
    assert (
        missing_binary(
            Path(sys.executable).name, label="python", hint="-", search_path=str(Path(sys.executable).parent)
        )
        is None
    )


def test_a_path_that_is_a_folder_or_not_executable_is_named_for_what_is_wrong(tmp_path: Path) -> None:
    script = tmp_path / "webctl"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)

    assert (
        missing_binary(str(tmp_path), label="pm2 binary", hint="-") == f"pm2 binary {tmp_path} does not exist"
    )
    assert missing_binary(str(script), label="command", hint="-") == (
        f"command {script} is not executable (chmod +x it)"
    )


def test_a_bare_name_is_looked_up_on_the_given_path_and_the_hint_says_what_to_do(tmp_path: Path) -> None:
    problem = missing_binary(
        "python3", label="command", hint="use an absolute path", search_path=str(tmp_path)
    )

    assert problem == "command 'python3' is not on the PATH: use an absolute path"


def test_docker_check_reports_a_missing_cli_before_calling_it(tmp_path: Path) -> None:
    missing = DockerManager("web", container="web", binary=str(tmp_path / "docker")).check()
    not_on_path = DockerManager("web", container="web", binary="no-such-docker-cli").check()

    assert missing == f"docker binary {tmp_path / 'docker'} does not exist"
    assert (
        not_on_path
        == "docker binary 'no-such-docker-cli' is not on the PATH: install the docker CLI or set binary"
    )
