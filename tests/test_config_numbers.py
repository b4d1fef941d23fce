"""Every number in healbot.toml has a type and a finite range: NaN, infinities, huge values, zero, negatives
and fractions for counts are clear errors naming key, value and range, from `load_config`, `healbot run`
and `healbot doctor` alike (issue 12.1), never a traceback later."""

from __future__ import annotations

import math
import subprocess
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bot.cli import main
from bot.config import NUMBER_RANGES, load_config, number_range
from bot.errors import ConfigError
from tests.fakes.daemon_proc import HEALBOT
from tests.helpers import make_repo
from tests.test_config_policy import render

# table -> key -> TOML value: a valid config that sets every numeric key
BASE: dict[str, dict[str, str]] = {
    "healbot": {
        "state_dir": '"state"',
        "poll_interval_s": "1.0",
        "diagnose_every_s": "3600",
        "max_samples": "5",
        "heartbeat_interval_s": "60",
    },
    "claude": {
        "max_turns": "8",
        "max_budget_usd": "1.0",
        "timeout_s": "600",
        "idle_timeout_s": "120",
        "max_concurrent": "1",
        "max_tool_calls": "40",
        "max_tool_bytes": "400000",
        "session_minutes": "60",
        "session_messages": "8",
    },
    "approval": {"expiry_minutes": "60", "reminder_minutes_before": "10"},
    "policy": {
        "max_fixes_per_fingerprint_per_day": "3",
        "max_restarts_per_service": "3",
        "restart_window_minutes": "30",
        "max_applies_per_day": "10",
        "grace_after_restart_s": "0",
    },
    "limits": {
        "period_s": "600",
        "new_incidents_per_service": "20",
        "new_incidents": "50",
        "diagnoses_per_service": "5",
        "diagnoses": "10",
    },
    "sandbox": {"memory_mb": "4096", "max_processes": "256", "max_file_mb": "1024", "tmp_mb": "512"},
    "metrics": {"port": "9464"},
    "alerts": {"port": "9465", "max_body_kb": "256"},
    "services.web": {"repo": '"{repo}"', "logs": '["web.log"]', "check_timeout_s": "300"},
    "services.web.manager": {"type": '"command"', "restart": '["true"]', "timeout_s": "30"},
    "services.web.health": {
        "http_timeout_s": "5",
        "tcp_port": "8080",
        "window_s": "30",
        "settle_s": "3",
    },
}

# (table, key, range key) of every numeric key
NUMERIC = [
    (table, key, f"{table.replace('services.web', 'services.*')}.{key}")
    for table, keys in BASE.items()
    for key in keys
    if f"{table.replace('services.web', 'services.*')}.{key}" in NUMBER_RANGES
]
MANAGER_TIMEOUT = ("services.web.manager", "timeout_s")

# TOML spellings of values no key may take, each with how the error shows it
HOSTILE_NUMBERS = ["nan", "inf", "-inf", "-1", "1e308", "18446744073709551616", "-0.0"]


def with_value(table: str, key: str, value: str) -> dict[str, dict[str, str]]:
    tables = {name: dict(keys) for name, keys in BASE.items()}
    tables[table][key] = value
    return tables


def bad_values(range_key: str) -> list[str]:
    allowed = number_range(range_key)
    values = [v for v in HOSTILE_NUMBERS if not allowed.admits(float(v))]
    if allowed.whole:
        values += ["0.5", f"{allowed.low + 1}.5", "5.0"]
    if not allowed.low_included:
        values.append("0")
    return values


CASES = [(table, key, value) for table, key, range_key in NUMERIC for value in bad_values(range_key)]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repo(tmp_path_factory.mktemp("numbers") / "web", {"app.py": "print('hi')\n"})


def test_every_numeric_key_has_a_range() -> None:
    assert len(NUMERIC) == len(NUMBER_RANGES)
    for allowed in NUMBER_RANGES.values():
        assert math.isfinite(allowed.high) and allowed.high > allowed.low


def test_the_base_config_loads(tmp_path: Path, repo: Path) -> None:
    path = tmp_path / "healbot.toml"
    path.write_text(render(BASE, repo))
    assert load_config(path).services["web"].health.tcp_port == 8080


@pytest.mark.parametrize(("table", "key", "value"), CASES, ids=[f"{t}.{k}={v}" for t, k, v in CASES])
def test_numbers_without_bounds_are_refused_naming_key_value_and_range(
    tmp_path: Path, repo: Path, table: str, key: str, value: str
) -> None:
    path = tmp_path / "healbot.toml"
    path.write_text(render(with_value(table, key, value), repo))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert f"{table}.{key}" in message and "at most" in message, message
    parsed = tomllib.loads(f"x = {value}")["x"]
    assert message.endswith(f"not {parsed!r}"), message


def test_a_fraction_for_a_count_is_never_truncated(tmp_path: Path, repo: Path) -> None:
    path = tmp_path / "healbot.toml"
    path.write_text(render(with_value("healbot", "max_samples", "0.5"), repo))
    with pytest.raises(ConfigError, match=r"healbot\.max_samples: must be an integer .* not 0\.5"):
        load_config(path)


def _cli(command: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HEALBOT), command, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def _in_process(command: str, config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main([command, "-c", str(config)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _hostile_configs(tmp_path: Path, repo: Path) -> list[tuple[str, str, Path]]:
    """One hostile value per numeric key: (key, value, config file)."""
    configs: list[tuple[str, str, Path]] = []
    for number, (table, key, range_key) in enumerate(NUMERIC):
        value = "0.5" if number_range(range_key).whole else ("nan" if number % 2 else "1e308")
        config = tmp_path / f"healbot-{number}.toml"
        config.write_text(render(with_value(table, key, value), repo))
        configs.append((f"{table}.{key}", value, config))
    for number, value in enumerate(("nan", "inf", "0", "1e308")):  # read when the manager is built
        config = tmp_path / "manager" / f"healbot-{number}.toml"
        config.parent.mkdir(exist_ok=True)
        config.write_text(render(with_value(*MANAGER_TIMEOUT, value), repo))
        configs.append((".".join(MANAGER_TIMEOUT), value, config))
    return configs


def _assert_refused(command: str, key: str, value: str, code: int, output: str) -> None:
    assert "Traceback" not in output, (command, key, value, output)
    assert key in output and "at most" in output, (command, key, value, output)
    if command == "run":
        assert code == 2 and "config error" in output, (key, value, output)
    else:
        assert code == 1 and "✗ " in output, (key, value, output)


def test_run_and_doctor_refuse_every_unbounded_number_without_a_traceback(
    tmp_path: Path, repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One hostile value per key through the CLI's entry point: `run` exits 2 with a config error, `doctor`
    says ✗ config with the same words; neither starts anything nor prints a traceback."""
    for key, value, config in _hostile_configs(tmp_path, repo):
        for command in ("run", "doctor"):
            _assert_refused(command, key, value, *_in_process(command, config, capsys))
    assert not (tmp_path / "state").exists()  # a bad number in the file: not even the store was opened


def test_the_installed_cli_refuses_unbounded_numbers_the_same_way(tmp_path: Path, repo: Path) -> None:
    """The installed `healbot` program, on a sample of the keys above: the first of the table and the
    manager's timeout (read only when the manager is built)."""
    configs = _hostile_configs(tmp_path, repo)
    sample = [configs[0], configs[len(NUMERIC)]]
    jobs = [(command, key, value, config) for key, value, config in sample for command in ("run", "doctor")]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda job: (job, _cli(job[0], job[3])), jobs))
    for (command, key, value, _), result in results:
        _assert_refused(command, key, value, result.returncode, result.stdout + result.stderr)
    assert not (tmp_path / "state").exists()


def test_a_service_name_with_a_dot_has_its_numbers_checked(tmp_path: Path, repo: Path) -> None:
    """Regression: the range of `services."web.v2".health.window_s` was looked up by splitting on dots."""
    tables = {name.replace("services.web", 'services."web.v2"'): dict(keys) for name, keys in BASE.items()}
    path = tmp_path / "healbot.toml"
    path.write_text(render(tables, repo))
    assert load_config(path).services["web.v2"].health.window_s == 30.0
    tables['services."web.v2".health']["window_s"] = "inf"
    path.write_text(render(tables, repo))
    with pytest.raises(ConfigError, match=r"services\.web\.v2\.health\.window_s: must be a number"):
        load_config(path)
