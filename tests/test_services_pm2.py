"""Pm2Manager against a real PM2 daemon in a scratch PM2_HOME, running tests/fakes/tiny_service.py."""

from __future__ import annotations

import json
import secrets
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.errors import ConfigError, RestartFailed, ServiceError
from bot.models import ServiceState
from healers.services.pm2 import Pm2Manager, _parse_jlist
from tests.fakes.pm2_env import Pm2Env
from tests.helpers import free_port, wait_until

SECRET = "hb-secret-" + secrets.token_hex(8)  # in every app's environment; must never surface


@pytest.fixture(scope="module")
def pm2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pm2Env]:
    workdir = tmp_path_factory.mktemp("pm2")
    env = Pm2Env.start()
    try:
        env.start_app("web", {"PORT": str(free_port()), "HEALBOT_TEST_SECRET": SECRET})
        env.start_app(
            "flaky",
            {"PORT": str(free_port()), "CRASH_FLAG": str(workdir / "crash"), "HEALBOT_TEST_SECRET": SECRET},
            max_restarts=2,
        )
        yield env
    finally:
        env.stop()


def manager(env: Pm2Env, app: str) -> Pm2Manager:
    return Pm2Manager(app, pm2_home=str(env.home), binary=env.binary, timeout_s=30)


def health_pid(env: Pm2Env, app: str) -> int:
    port = env.app(app)["pm2_env"]["env"]["PORT"]

    def answer() -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                return int(json.load(response)["pid"])
        except OSError:
            return 0

    return wait_until(answer, what=f"{app} to answer /health")


@pytest.mark.pm2
def test_status_log_paths_and_check_without_leaking_the_environment(pm2: Pm2Env) -> None:
    web = manager(pm2, "web")
    assert SECRET in json.dumps(pm2.jlist())  # the premise: jlist does carry the app's environment

    status = web.status()
    paths = web.log_paths()
    problem = web.check()

    assert status.state is ServiceState.RUNNING
    assert status.pid == health_pid(pm2, "web")
    assert status.restarts == 0
    assert tuple(paths) == (str(pm2.home / "logs/web-out.log"), str(pm2.home / "logs/web-error.log"))
    assert problem is None
    assert SECRET not in repr((status, paths))


@pytest.mark.pm2
def test_restart_returns_a_new_process_that_stayed_up(pm2: Pm2Env) -> None:
    web = manager(pm2, "web")
    old = web.status()

    status = web.restart(settle_s=1)

    assert status.state is ServiceState.RUNNING
    assert status.pid not in (None, old.pid)
    assert status.restarts == (old.restarts or 0) + 1
    assert health_pid(pm2, "web") == status.pid
    # SIGINT on restart is handled quietly: no KeyboardInterrupt noise in the error log
    assert "KeyboardInterrupt" not in (pm2.home / "logs/web-error.log").read_text()


@pytest.mark.pm2
def test_crash_loop_raises_restart_failed_then_errored_is_reported_as_fatal(pm2: Pm2Env) -> None:
    flaky = manager(pm2, "flaky")
    crash_flag = Path(pm2.app("flaky")["pm2_env"]["env"]["CRASH_FLAG"])
    crash_flag.touch()
    try:
        with pytest.raises(RestartFailed) as failure:
            flaky.restart(settle_s=1)
        errored = wait_until(lambda: (s := flaky.status()).state is ServiceState.FATAL and s, what="errored")
    finally:
        crash_flag.unlink()

    assert str(failure.value).startswith("pm2: flaky ")
    assert "crash-looping" in str(failure.value) or "entered" in str(failure.value)
    assert errored.detail.startswith("errored (")
    assert "last exit code 1" in errored.detail
    assert errored.pid is None
    assert SECRET not in str(failure.value) + repr(errored)

    recovered = flaky.restart(settle_s=0.5)

    assert recovered.state is ServiceState.RUNNING
    assert health_pid(pm2, "flaky") == recovered.pid


@pytest.mark.pm2
def test_unknown_app_is_named_with_the_known_ones(pm2: Pm2Env) -> None:
    ghost = manager(pm2, "ghost")

    problem = ghost.check()

    assert problem == f"PM2 (PM2_HOME={pm2.home}) has no app 'ghost'; known: flaky, web"
    with pytest.raises(ServiceError, match="no app 'ghost'"):
        ghost.status()
    with pytest.raises(RestartFailed, match="cannot restart"):
        ghost.restart(settle_s=0.1)


def test_a_home_without_daemon_is_reported_and_no_daemon_is_spawned(tmp_path: Path) -> None:
    binary = _pm2_or_fail()
    home = tmp_path / "pm2-home"
    home.mkdir()
    idle = Pm2Manager("web", pm2_home=str(home), binary=binary)

    problem = idle.check()

    assert problem is not None
    assert f"the PM2 daemon for PM2_HOME={home} is not running" in problem
    assert "pm2 resurrect" in problem
    with pytest.raises(ServiceError, match="not running"):
        idle.status()
    with pytest.raises(RestartFailed, match="not running"):
        idle.restart(settle_s=0.1)
    assert list(home.iterdir()) == []  # no pm2 call was made, so no daemon was spawned


def test_missing_binary_is_reported(tmp_path: Path) -> None:
    problem = Pm2Manager("web", binary=str(tmp_path / "pm2")).check()
    on_path = Pm2Manager("web", binary="no-such-pm2-binary").check()

    assert problem == f"pm2 binary {tmp_path / 'pm2'} does not exist"
    assert on_path is not None
    assert "'no-such-pm2-binary' is not on the PATH" in on_path


def test_jlist_parsing_reads_only_named_fields_and_never_quotes_output() -> None:
    entry = {
        "pid": 42, "name": "web", "pm_id": 0,
        "pm2_env": {
            "status": "online", "restart_time": 3, "unstable_restarts": 1,
            "pm_out_log_path": "/o.log", "pm_err_log_path": "/e.log", "API_TOKEN": SECRET,
            "env": {"API_TOKEN": SECRET},
        },
    }  # fmt: skip
    warning = ">>>> In-memory PM2 is out-of-date, do:\n>>>> $ pm2 update\n"

    (process,) = _parse_jlist(warning + json.dumps([entry]))

    assert (process.pid, process.status, process.restart_time, process.out_log) == (42, "online", 3, "/o.log")
    assert SECRET not in repr(process)
    with pytest.raises(ServiceError) as error:
        _parse_jlist('[{"name": "web", "pm2_env": {"TOKEN": "' + SECRET + '"')  # truncated JSON
    assert SECRET not in str(error.value)


def test_errored_app_has_no_pid_even_when_jlist_still_shows_the_dead_one() -> None:
    """Regression: right after PM2 gave up, `jlist` showed status "errored" with the dead process's pid,
    and the manager reported that pid as if a process ran."""
    entry = {"pid": 13914, "name": "flaky", "pm_id": 0, "pm2_env": {"status": "errored", "exit_code": 1}}

    (process,) = _parse_jlist(json.dumps([entry]))

    assert process.status == "errored"
    assert process.pid is None


def test_from_options_defaults_and_relative_home(tmp_path: Path) -> None:
    config = str(tmp_path / "healbot.toml")

    default = Pm2Manager.from_options("web", {}, config)
    custom = Pm2Manager.from_options("web", {"app": "api", "pm2_home": ".pm2", "binary": "/x/pm2"}, config)

    assert (default.app, default.pm2_home, default.binary, default.timeout_s) == ("web", None, "pm2", 30.0)
    assert (custom.app, custom.pm2_home, custom.binary) == ("api", str(tmp_path / ".pm2"), "/x/pm2")


@pytest.mark.parametrize(
    ("options", "key", "message"),
    [
        ({"app": 1}, "app", "must be a string"),
        ({"app": ""}, "app", "must not be empty"),
        ({"pm2_home": ["x"]}, "pm2_home", "must be a string"),
        ({"timeout_s": "10"}, "timeout_s", "must be a number"),
        ({"timeout_s": True}, "timeout_s", "must be a number"),
        ({"name": "web"}, "name", "unknown option"),
    ],
)
def test_from_options_rejects_bad_tables_naming_the_key(
    tmp_path: Path, options: dict[str, object], key: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        Pm2Manager.from_options("web", options, str(tmp_path / "healbot.toml"))

    assert error.value.key == f"services.web.manager.{key}"


def _pm2_or_fail() -> str:
    from tests.conftest import pm2_binary

    binary = pm2_binary()
    if binary is None:
        pytest.fail("pm2 missing: run `make tools`")
    return binary
