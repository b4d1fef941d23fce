"""deploy/: each file's claims checked where this machine can: the systemd unit with `systemd-analyze
verify` (and its keys), the supervisord section and the PM2 ecosystem file by running `healbot run`
under the real supervisord and PM2 with a scratch config."""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.config import load_config
from tests.fakes.pm2_env import Pm2Env
from tests.fakes.supervisor_env import SupervisorEnv, supervisord_binary
from tests.helpers import make_repo, wait_until

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
HEALBOT = str(Path(sys.executable).parent / "healbot")
INSTALLED_BIN = "/opt/healbot/bin/healbot"
INSTALLED_CONFIG = "/etc/healbot/healbot.toml"


def unit_keys(text: str) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections.setdefault(current, {})
            continue
        key, _, value = line.partition("=")
        sections[current].setdefault(key.strip(), []).append(value.strip())
    return sections


def test_unit_has_the_promised_hardening_and_lifecycle() -> None:
    keys = unit_keys((DEPLOY / "healbot.service").read_text())
    service = keys["Service"]
    expected = {
        "NoNewPrivileges": "true",
        "ProtectSystem": "strict",
        "PrivateTmp": "true",
        "ProtectHome": "true",  # read-only left /home visible to it
        "User": "healbot",
        "Restart": "on-failure",
        "StandardOutput": "journal",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "KillSignal": "SIGTERM",
    }
    for key, value in expected.items():
        assert service.get(key) == [value], key
    assert "/var/lib/healbot" in service["ReadWritePaths"][0].split()
    assert service["ExecStart"] == [f"{INSTALLED_BIN} run --config {INSTALLED_CONFIG} --log-json"]
    assert int(keys["Unit"]["StartLimitBurst"][0]) >= 1
    assert keys["Install"]["WantedBy"] == ["multi-user.target"]


def _verify(unit_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze missing: apt-get install systemd (the unit's keys are checked above)")
    unit = tmp_path / "healbot.service"
    unit.write_text(unit_text)
    return subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )


def _runnable_unit() -> str:
    text = (DEPLOY / "healbot.service").read_text().replace(INSTALLED_BIN, HEALBOT)
    return text.replace("User=healbot", "User=root").replace("Group=healbot", "Group=root")


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    result = _verify(_runnable_unit(), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_systemd_analyze_verify_catches_a_typo(tmp_path: Path) -> None:
    result = _verify(_runnable_unit().replace("NoNewPrivileges=", "NoNewPrivilegez="), tmp_path)
    assert "Unknown key 'NoNewPrivilegez'" in result.stderr


def test_sudoers_example_allows_only_fixed_commands() -> None:
    text = (DEPLOY / "sudoers.d" / "healbot").read_text()
    rules = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert any(line.startswith("healbot ALL=(root) NOPASSWD: HEALBOT_RESTARTS") for line in rules)
    assert "*" not in "\n".join(rules)
    assert "ALL=(ALL)" not in text  # visudo -c and sudo itself: tests/test_privileges_real.py


def test_example_config_is_valid() -> None:
    config = load_config(DEPLOY / "healbot.example.toml", check_repos=False)
    assert config.services


# --- running healbot under the real process managers ---------------------------------------------------


@pytest.fixture
def scratch_config(tmp_path: Path) -> Path:
    """A config healbot can run with here: one service whose log is a file in tmp_path."""
    repo = make_repo(tmp_path / "repo", {"app.py": "print('hi')\n"})
    (tmp_path / "app.log").write_text("")
    config = tmp_path / "healbot.toml"
    config.write_text(
        f'[healbot]\nstate_dir = "{tmp_path / "state"}"\n\n'
        f'[services.app]\nrepo = "{repo}"\nlogs = ["{tmp_path / "app.log"}"]\n'
        'manager = { type = "command", restart = ["true"] }\n'
        "[services.app.health]\nprocess = false\n"
    )
    return config


def _db_exists(config: Path) -> bool:
    return load_config(config, check_repos=False).db_path.exists()


@pytest.mark.supervisord
def test_supervisord_section_runs_healbot(tmp_path: Path, scratch_config: Path) -> None:
    section = configparser.RawConfigParser()
    section.read_string((DEPLOY / "supervisord.conf").read_text())
    program = dict(section["program:healbot"])
    assert program["command"] == f"{INSTALLED_BIN} run --config {INSTALLED_CONFIG}"
    assert program["stopsignal"] == "TERM"
    assert program["stopasgroup"] == "true"
    # Only what cannot exist here changes: the paths, the dedicated user, the 10 s start wait.
    program.update(
        command=f"{HEALBOT} run --config {scratch_config}",
        directory=str(tmp_path),
        stdout_logfile=str(tmp_path / "healbot-out.log"),
        startsecs="2",
    )
    program.pop("user")
    socket_dir = Path(tempfile.mkdtemp(prefix="hb-sv-"))
    socket_path = socket_dir / "supervisor.sock"
    conf = tmp_path / "supervisord.conf"
    conf.write_text(
        f"[unix_http_server]\nfile={socket_path}\nchmod=0700\n\n"
        f"[supervisord]\nlogfile={tmp_path / 'supervisord.log'}\npidfile={tmp_path / 'supervisord.pid'}\n"
        f"childlogdir={tmp_path}\nnodaemon=true\n\n"
        "[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
        "[program:healbot]\n" + "".join(f"{k}={v}\n" for k, v in program.items())
    )
    with open(tmp_path / "supervisord.out", "wb") as out:
        process = subprocess.Popen(
            [supervisord_binary(), "-n", "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    env = SupervisorEnv(tmp_path, socket_dir, conf, process, ())
    try:
        wait_until(env._answers, timeout=15, what="supervisord to answer")
        env.wait_state("healbot", "RUNNING", timeout=30)
        wait_until(lambda: _db_exists(scratch_config), timeout=15, what="healbot to open its state")
        env.rpc().stopProcess("healbot")  # SIGTERM: healbot stops cleanly, so no restart
        assert env.info("healbot")["statename"] == "STOPPED"
        log = (tmp_path / "healbot-out.log").read_text()
        assert "Traceback" not in log, log
    finally:
        env.stop()


@pytest.fixture
def pm2() -> Iterator[Pm2Env]:
    env = Pm2Env.start()
    try:
        yield env
    finally:
        env.stop()


@pytest.mark.pm2
def test_pm2_ecosystem_file_runs_healbot(tmp_path: Path, scratch_config: Path, pm2: Pm2Env) -> None:
    text = (DEPLOY / "ecosystem.config.js").read_text()
    assert f'script: "{INSTALLED_BIN}"' in text
    assert f'args: ["run", "--config", "{INSTALLED_CONFIG}"]' in text
    local = (
        text.replace(INSTALLED_BIN, HEALBOT)
        .replace(INSTALLED_CONFIG, str(scratch_config))
        .replace('cwd: "/var/lib/healbot"', f'cwd: "{tmp_path}"')
    )
    ecosystem = tmp_path / "ecosystem.config.js"
    ecosystem.write_text(local)
    pm2.run("start", str(ecosystem))
    try:
        app = wait_until(
            lambda: next((a for a in pm2.jlist() if a["name"] == "healbot"), None), timeout=20, what="the app"
        )
        assert app["pm2_env"]["exec_interpreter"] == "none"
        wait_until(lambda: _db_exists(scratch_config), timeout=20, what="healbot to open its state")
        wait_until(lambda: pm2.app("healbot")["pm2_env"]["status"] == "online", timeout=20, what="online")
        assert pm2.app("healbot")["pm2_env"]["restart_time"] == 0
    finally:
        pm2.run("delete", "healbot")


def test_ecosystem_file_is_valid_javascript_when_node_is_present(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node missing: run `make tools` (PM2 needs it too)")
    script = f"const c = require({json.dumps(str(DEPLOY / 'ecosystem.config.js'))}); console.log(JSON.stringify(c));"
    out = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=30, check=True)
    (app,) = json.loads(out.stdout)["apps"]
    assert app["name"] == "healbot"
    assert app["kill_timeout"] >= 30000
    assert re.fullmatch(r"\d+s", app["min_uptime"])
