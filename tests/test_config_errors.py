"""Malformed configs end in an error that names what is wrong, never a traceback (issue 12.2)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bot.config import load_config
from bot.errors import ConfigError
from tests.fakes.daemon_proc import HEALBOT
from tests.helpers import make_repo
from tests.test_config_numbers import BASE, render, with_value


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "web", {"app.py": "print('hi')\n"})


def _cli(command: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HEALBOT, command, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ("[healbot]\npoll_interval_s = 2\n", "'poll_interval_s' is set twice"),
        ("[claude]\nmax_turns = 3\n", "'max_turns' is set twice"),
        ("[policy]\n", "'policy' is set twice"),
    ],
)
def test_a_duplicate_toml_key_named_only_line_and_column(
    tmp_path: Path, repo: Path, extra: str, named: str
) -> None:
    text = render(BASE, repo)
    table = extra.splitlines()[0]
    if extra.count("\n") > 1:  # a key set again inside its own table
        text = text.replace(f"{table}\n", extra, 1)
    else:  # a table declared twice
        text += "\n" + extra
    path = tmp_path / "healbot.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert named in str(caught.value) and "line" in str(caught.value)


def test_other_toml_errors_show_the_offending_line(tmp_path: Path, repo: Path) -> None:
    path = tmp_path / "healbot.toml"
    path.write_text(render(BASE, repo).replace("max_turns = 8", "max_turns = = 8"))
    with pytest.raises(ConfigError, match=r"is not valid TOML: .*'max_turns = = 8'"):
        load_config(path)


def test_two_services_on_the_same_log_file_were_accepted_silently(tmp_path: Path, repo: Path) -> None:
    tables = with_value("services.web", "logs", '["/var/log/shared.log"]')
    tables["services.api"] = {"repo": '"{repo}"', "logs": '["/var/log/shared.log", "/var/log/api.log"]'}
    tables["services.api.manager"] = {"type": '"command"', "restart": '["true"]'}
    path = tmp_path / "healbot.toml"
    path.write_text(render(tables, repo))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "services.api.logs" in message and "/var/log/shared.log is also a log of services.web" in message


def test_an_unwritable_state_dir_gave_a_traceback_from_store_open(tmp_path: Path, repo: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    path = tmp_path / "healbot.toml"
    path.write_text(render(with_value("healbot", "state_dir", f'"{blocker}/state"'), repo))
    run = _cli("run", path)
    doctor = _cli("doctor", path)
    for result in (run, doctor):
        output = result.stdout + result.stderr
        assert "Traceback" not in output, output
        assert f"state_dir {blocker}/state is not writable" in output, output
    assert run.returncode == 2 and "config error" in run.stderr
    assert doctor.returncode == 1
