from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import load_config
from bot.errors import ConfigError
from tests.conftest import REPO_ROOT
from tests.helpers import make_repo

GOOD = """
[healbot]
state_dir = "state"

[claude]
max_turns = 4

[approval]
expiry_minutes = 30

[services.web]
repo = "{repo}"
logs = ["web.log"]
check_command = ["python", "-m", "pytest"]

[services.web.manager]
type = "supervisord"
socket = "/run/supervisor.sock"

[services.web.health]
http_url = "http://127.0.0.1:8080/health"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "healbot.toml"
    path.write_text(text)
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "web", {"app.py": "print('hi')\n"})


def test_a_good_config_loads_with_explicit_defaults(tmp_path: Path, repo: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD.format(repo=repo)))
    web = cfg.services["web"]
    assert web.repo == repo
    assert web.logs == (tmp_path / "web.log",)
    assert web.manager_type == "supervisord"
    assert web.manager_options == {"socket": "/run/supervisor.sock"}
    assert web.check_command == ("python", "-m", "pytest")
    assert cfg.approval.expiry_s == 1800.0
    assert cfg.claude.max_turns == 4
    assert cfg.claude.timeout_s == 600.0
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.db_path == tmp_path / "state" / "healbot.db"


@pytest.mark.parametrize(
    ("edit", "key", "words"),
    [
        (
            lambda t: t.replace("max_turns = 4", "max_turns = 4\nmax_turn = 3"),
            "claude.max_turn",
            "unknown key",
        ),
        (
            lambda t: t.replace("max_turns = 4", 'max_turns = "four"'),
            "claude.max_turns",
            "must be an integer",
        ),
        (
            lambda t: t.replace("expiry_minutes = 30", "expiry_minutes = 0"),
            "approval.expiry_minutes",
            "greater than 0",
        ),
        (
            lambda t: t.replace('type = "supervisord"', 'type = "upstart"'),
            "services.web.manager.type",
            "must be one of",
        ),
        (lambda t: t.replace('type = "supervisord"\n', ""), "services.web.manager.type", "required"),
        (
            lambda t: t.replace('logs = ["web.log"]', 'logs = "web.log"'),
            "services.web.logs",
            "must be a list",
        ),
        (
            lambda t: t.replace('check_command = ["python", "-m", "pytest"]', "check_command = []"),
            "services.web.check_command",
            "non-empty",
        ),
        (
            lambda t: t.replace("[claude]", '[claude]\napi_key = "sk-ant-xyz"'),
            "claude.api_key",
            "secrets must not be in the config",
        ),
        (
            lambda t: t.replace('http_url = "http://127.0.0.1:8080/health"', 'http_url = "127.0.0.1"'),
            "services.web.health.http_url",
            "http://",
        ),
        (
            lambda t: t.replace("[services.web]", '[services.web]\nallowed_paths = ["../etc"]'),
            "services.web.allowed_paths",
            "inside",
        ),
        (
            lambda t: t.replace("[approval]", '[approval]\nchannel = "telegram"'),
            "approval.approvers",
            "required",
        ),
    ],
)
def test_bad_config_names_the_key_and_the_file(
    tmp_path: Path, repo: Path, edit, key: str, words: str
) -> None:
    path = write(tmp_path, edit(GOOD.format(repo=repo)))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message
    assert key in message
    assert words in message
    assert err.value.key == key


def test_missing_services_table_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="services: is required"):
        load_config(write(tmp_path, "[healbot]\n"))


def test_repo_that_is_not_a_git_repo_is_refused(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(ConfigError, match=r"services\.web\.repo: .* is not a git repository"):
        load_config(write(tmp_path, GOOD.format(repo=plain)))


def test_invalid_toml_and_missing_file_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(write(tmp_path, "[healbot\n"))
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml")


def test_the_shipped_example_config_is_valid() -> None:
    cfg = load_config(REPO_ROOT / "deploy" / "healbot.example.toml", check_repos=False)
    assert set(cfg.services) == {"web", "worker"}
    assert cfg.services["web"].runbooks == {"clear_cache": ("/usr/local/bin/web-clear-cache",)}
