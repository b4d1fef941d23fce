"""The `[policy]` table (breaker limits, maintenance windows, grace window), and every config key wrong in
turn: one clear error naming that key, nothing loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import PolicyConfig, load_config
from bot.errors import ConfigError
from tests.helpers import make_repo

BASE = {
    "healbot": {"state_dir": '"state"', "poll_interval_s": "1", "diagnose_every_s": "60", "max_samples": "5"},
    "claude": {"runner": '"cli"', "max_turns": "4", "timeout_s": "60", "idle_timeout_s": "20"},
    "approval": {"expiry_minutes": "30", "reminder_minutes_before": "5"},
    "policy": {
        "max_fixes_per_fingerprint_per_day": "3",
        "max_restarts_per_service": "3",
        "restart_window_minutes": "30",
        "max_applies_per_day": "10",
        "maintenance_windows": '["sun 02:00-04:00", "23:30-00:30"]',
        "grace_after_restart_s": "45",
    },
    "sandbox": {"bwrap": '"bwrap"', "user": '"nobody"', "memory_mb": "2048", "max_processes": "64"},
    "services.web": {
        "repo": '"{repo}"',
        "logs": '["web.log"]',
        "check_command": '["pytest"]',
        "check_read_only_paths": '["/opt/node"]',
    },
    "services.web.manager": {"type": '"command"', "restart": '["true"]'},
    "services.web.health": {"window_s": "10", "settle_s": "1", "tcp_port": "8080"},
}

# (table, key, bad value, words the error must contain)
WRONG = [
    ("healbot", "poll_interval_s", "0", "greater than 0"),
    ("healbot", "diagnose_every_s", '"soon"', "must be a number"),
    ("healbot", "max_samples", "-1", "at least 1"),
    ("healbot", "state_dir", "3", "must be a string"),
    ("claude", "runner", '"gpt"', "must be one of"),
    ("claude", "max_turns", "0", "at least 1"),
    ("claude", "timeout_s", "-5", "greater than 0"),
    ("claude", "idle_timeout_s", "true", "not a boolean"),
    ("approval", "expiry_minutes", "0", "greater than 0"),
    ("approval", "reminder_minutes_before", "40", "shorter than expiry_minutes"),
    ("policy", "max_fixes_per_fingerprint_per_day", "0", "at least 1"),
    ("policy", "max_restarts_per_service", '"three"', "must be an integer"),
    ("policy", "restart_window_minutes", "-1", "greater than 0"),
    ("policy", "max_applies_per_day", "1.5", "must be an integer"),
    ("policy", "maintenance_windows", '["sunday 02:00-04:00"]', "is not a window"),
    ("policy", "maintenance_windows", '["xyz 02:00-04:00"]', "is not a weekday"),
    ("policy", "maintenance_windows", '["25:00-04:00"]', "not a time of day"),
    ("policy", "maintenance_windows", '["02:00-02:00"]', "is empty"),
    ("policy", "maintenance_windows", '"02:00-04:00"', "must be a list"),
    ("policy", "grace_after_restart_s", "-1", "at least 0"),
    ("sandbox", "bwrap", '""', "must not be empty"),
    ("sandbox", "user", '"root"', "unprivileged user, not root"),
    ("sandbox", "user", '"0"', "unprivileged user, not root"),
    ("sandbox", "memory_mb", "16", "at least 256"),
    ("sandbox", "max_processes", "0", "at least 8"),
    ("sandbox", "max_file_mb", "1.5", "must be an integer"),
    ("sandbox", "tmp_mb", "true", "not a boolean"),
    ("services.web", "check_command", "[]", "non-empty argv"),
    ("services.web", "check_read_only_paths", '["opt/node"]', "absolute path"),
    ("services.web", "check_read_only_paths", '["/"]', "not / itself"),
    ("services.web", "check_read_only_paths", '["/opt/../root"]', "absolute path"),
    ("services.web", "check_read_only_paths", '"/opt"', "must be a list"),
    ("services.web", "logs", "[1]", "list of strings"),
    ("services.web.manager", "type", '"launchd"', "must be one of"),
    ("services.web.health", "tcp_port", "70000", "at most 65535"),
    ("services.web.health", "window_s", "0", "greater than 0"),
]


def render(tables: dict[str, dict[str, str]], repo: Path) -> str:
    lines = []
    for table, keys in tables.items():
        lines.append(f"[{table}]")
        lines.extend(f"{key} = {value.format(repo=repo)}" for key, value in keys.items())
        lines.append("")
    return "\n".join(lines)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "web", {"app.py": "print('hi')\n"})


def test_the_policy_table_loads(tmp_path: Path, repo: Path) -> None:
    path = tmp_path / "healbot.toml"
    path.write_text(render(BASE, repo))
    cfg = load_config(path)
    assert cfg.policy == PolicyConfig(
        fixes_per_fingerprint_per_day=3,
        restarts_per_service=3,
        restart_window_s=1800.0,
        applies_per_day=10,
        maintenance_windows=("sun 02:00-04:00", "23:30-00:30"),
        grace_after_restart_s=45.0,
    )


def test_without_a_policy_table_the_defaults_hold(tmp_path: Path, repo: Path) -> None:
    path = tmp_path / "healbot.toml"
    path.write_text(render({k: v for k, v in BASE.items() if k != "policy"}, repo))
    assert load_config(path).policy == PolicyConfig()


@pytest.mark.parametrize(
    ("table", "key", "value", "words"), WRONG, ids=[f"{t}.{k}={v}" for t, k, v, _ in WRONG]
)
def test_each_wrong_key_gives_one_error_naming_it(
    tmp_path: Path, repo: Path, table: str, key: str, value: str, words: str
) -> None:
    tables = {name: dict(keys) for name, keys in BASE.items()}
    tables[table][key] = value
    path = tmp_path / "healbot.toml"
    path.write_text(render(tables, repo))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert f"{table}.{key}" in message, message
    assert words in message, message
    assert str(path) in message


def test_an_unknown_policy_key_is_named(tmp_path: Path, repo: Path) -> None:
    tables = {name: dict(keys) for name, keys in BASE.items()}
    tables["policy"]["max_fixes_per_day"] = "3"
    path = tmp_path / "healbot.toml"
    path.write_text(render(tables, repo))
    with pytest.raises(ConfigError, match=r"policy\.max_fixes_per_day.*unknown key"):
        load_config(path)
