"""`healbot init`: detection against real supervisord and PM2, recorded systemd/docker output, the file."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from bot import init
from bot.cli import main
from bot.config import load_config
from bot.errors import ConfigError, HealbotError
from tests.fakes.pm2_env import Pm2Env
from tests.fakes.supervisor_env import TINY_SERVICE, Program, SupervisorEnv, tiny_service_argv
from tests.helpers import free_port, make_repo, wait_until

RECORDED = Path(__file__).parent / "data" / "recorded"
NOTHING = init.DetectOptions(skip=frozenset(init.ManagerKind))


class Recorded:
    """A command runner answering from recorded files and remembering every argv it was given."""

    def __init__(self, answers: Mapping[str, init.CommandOutput]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], env: Mapping[str, str] | None) -> init.CommandOutput:
        self.calls.append(list(argv))
        return self.answers.get(Path(argv[0]).name, init.CommandOutput(127, "", "not found"))


def recorded(name: str) -> str:
    return (RECORDED / name).read_text()


def test_systemd_running_units_from_recorded_output() -> None:
    run = Recorded({"systemctl": init.CommandOutput(0, recorded("systemctl-list-units-running.json"), "")})
    found = init.detect_systemd(run)
    assert [s.name for s in found] == ["cron", "nginx", "shop-api"]
    assert found[2].options == (("unit", "shop-api.service"),)
    assert found[2].log_paths == ("journald: journalctl -u shop-api.service",)
    assert run.calls[0][:3] == ["systemctl", "list-units", "--type=service"]


SHOW_FRAGMENTS = (
    "Id=cron.service\nFragmentPath=/lib/systemd/system/cron.service\n\n"
    "Id=nginx.service\nFragmentPath=/usr/lib/systemd/system/nginx.service\n\n"
    "Id=shop-api.service\nFragmentPath=/etc/systemd/system/shop-api.service\n"
)


class ListThenShow(Recorded):
    def __call__(self, argv: Sequence[str], env: Mapping[str, str] | None) -> init.CommandOutput:
        self.calls.append(list(argv))
        if argv[1] == "show":
            return init.CommandOutput(0, SHOW_FRAGMENTS, "")
        return init.CommandOutput(0, recorded("systemctl-list-units-running.json"), "")


def test_init_leaves_out_units_installed_by_packages_such_as_cron() -> None:
    """init proposed every running unit, journald and dbus included, as a service to heal with a /srv repo."""
    run = ListThenShow({})
    found = init.detect_systemd(run)
    assert [s.name for s in found] == ["shop-api"]
    assert run.calls[1] == [
        "systemctl",
        "show",
        "--property=Id,FragmentPath",
        "--no-pager",
        "cron.service",
        "nginx.service",
        "shop-api.service",
    ]


def test_docker_containers_from_recorded_output() -> None:
    run = Recorded({"docker": init.CommandOutput(0, recorded("docker-ps.jsonl"), "")})
    found = init.detect_docker(run)
    assert [(s.name, s.options, s.state) for s in found] == [
        ("db", (("container", "db"),), "running"),
        ("shop-web", (("container", "shop-web"),), "running"),
    ]


def test_no_systemd_and_no_docker_daemon_detect_nothing() -> None:
    run = Recorded(
        {
            "systemctl": init.CommandOutput(1, "", recorded("systemctl-list-units-no-systemd.stderr")),
            "docker": init.CommandOutput(1, "", recorded("docker-ps-no-daemon.stderr")),
        }
    )
    assert init.detect_systemd(run) == []
    assert init.detect_docker(run) == []


def test_garbage_output_detects_nothing() -> None:
    run = Recorded(
        {
            "systemctl": init.CommandOutput(0, '{"not": "a list"', ""),
            "docker": init.CommandOutput(0, 'not json\n{"Names": 5}\n', ""),
        }
    )
    assert init.detect_systemd(run) == []
    assert init.detect_docker(run) == []


def test_missing_tool_is_not_an_error() -> None:
    run = init.subprocess_runner(timeout_s=5)
    assert init.detect_docker(run, docker="/nonexistent/docker") == []


def test_pm2_is_not_called_without_a_running_daemon(tmp_path: Path) -> None:
    run = Recorded({})
    assert init.detect_pm2(run, pm2_home=str(tmp_path)) == []
    assert run.calls == []  # any pm2 call would have spawned a daemon
    assert not (tmp_path / "pm2.pid").exists()


@pytest.mark.supervisord
def test_supervisord_programs_with_their_logs(tmp_path: Path) -> None:
    env = SupervisorEnv.start(
        tmp_path / "sv", [Program("web", tiny_service_argv(), {"PORT": str(free_port())})]
    )
    try:
        env.wait_state("web", "RUNNING")
        found = init.detect_supervisord(f"unix://{env.socket_path}")
    finally:
        env.stop()
    assert len(found) == 1
    web = found[0]
    assert (web.name, web.manager, web.state) == ("web", init.ManagerKind.SUPERVISORD, "RUNNING")
    assert web.options == (("socket", env.socket_path), ("program", "web"))
    assert web.log_paths == (str(env.log_file("web", "out")), str(env.log_file("web", "err")))


def test_supervisord_socket_missing_or_dead(tmp_path: Path) -> None:
    assert init.detect_supervisord(str(tmp_path / "absent.sock")) == []
    stale = tmp_path / "stale.sock"
    stale.write_text("")
    assert init.detect_supervisord(str(stale), timeout_s=2) == []


@pytest.mark.pm2
def test_pm2_apps_with_their_logs_and_cwd(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "shop", {"app.py": "print('hi')\n"})
    env = Pm2Env.start()
    try:
        subprocess.run(
            [env.binary, "start", str(TINY_SERVICE), "--name", "shop", "--interpreter", sys.executable],
            env=env.environment({"PORT": str(free_port())}),
            cwd=repo,
            capture_output=True,
            timeout=60,
            check=True,
            start_new_session=True,
        )
        wait_until(lambda: env.app("shop")["pm2_env"]["status"] == "online", timeout=20, what="shop online")
        found = init.detect_pm2(init.subprocess_runner(), pm2_home=str(env.home), binary=env.binary)
        output = tmp_path / "healbot.toml"
        answers = init.non_interactive(found, init.InitAnswers(state_dir=str(tmp_path / "state")))
        init.write_config(init.render_config(answers), output, force=False)
    finally:
        env.stop()
    assert [s.name for s in found] == ["shop"]
    shop = found[0]
    assert shop.repo_guess == str(repo)
    assert shop.log_paths == (
        str(env.home / "logs" / "shop-out.log"),
        str(env.home / "logs" / "shop-error.log"),
    )
    assert ("pm2_home", str(env.home)) in shop.options
    config = load_config(output)  # the repo exists and is a git checkout: the full check passes
    assert config.services["shop"].manager_type == "pm2"
    assert config.services["shop"].repo == repo
    assert config.services["shop"].manager_options["app"] == "shop"


def test_written_config_loads_and_is_commented(tmp_path: Path) -> None:
    detected = [
        init.DetectedService(
            "web.v2", init.ManagerKind.DOCKER, (("container", "web.v2"),), ("docker logs x",)
        ),
        init.DetectedService("api", init.ManagerKind.SYSTEMD, (("unit", "api.service"),), ()),
    ]
    answers = init.non_interactive(
        detected, init.InitAnswers(channel="telegram", approvers=("42",), chats=("-100",), state_dir="st")
    )
    output = tmp_path / "healbot.toml"
    init.write_config(init.render_config(answers), output, force=False)
    config = load_config(output, check_repos=False)
    assert set(config.services) == {"web.v2", "api"}
    assert config.services["web.v2"].repo == Path("/srv/web.v2")
    assert config.services["api"].manager_options == {"unit": "api.service"}
    assert config.approval.channel == "telegram"
    assert config.approval.approvers == ("42",)
    assert config.state_dir == (tmp_path / "st").resolve()
    text = output.read_text()
    assert "# healbot reads these through the manager: docker logs x" in text
    assert oct(output.stat().st_mode & 0o777) == "0o640"


def test_values_are_escaped() -> None:
    nasty = 'a"b\\c\nd\x7f'
    assert tomllib.loads(f"k = {init.toml_string(nasty)}")["k"] == nasty
    assert init.toml_key("ok_name-1") == "ok_name-1"
    assert tomllib.loads(f"{init.toml_key('a.b c')} = 1") == {"a.b c": 1}


def test_existing_file_is_not_overwritten_without_force(tmp_path: Path) -> None:
    output = tmp_path / "healbot.toml"
    output.write_text("mine\n")
    with pytest.raises(HealbotError, match="already exists; pass --force"):
        init.run_init(output, assume_yes=True, force=False, defaults=init.InitAnswers(), detect=NOTHING)
    assert output.read_text() == "mine\n"
    init.run_init(output, assume_yes=True, force=True, defaults=init.InitAnswers(), detect=NOTHING)
    assert "[services.app]" in output.read_text()


def test_telegram_without_approvers_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    output = tmp_path / "healbot.toml"
    with pytest.raises(ConfigError, match="approvers"):
        init.run_init(
            output,
            assume_yes=True,
            force=False,
            defaults=init.InitAnswers(channel="telegram"),
            detect=NOTHING,
        )
    assert not output.exists()
    assert list(tmp_path.iterdir()) == []


def test_unknown_channel_and_missing_directory_are_refused(tmp_path: Path) -> None:
    with pytest.raises(HealbotError, match="--channel must be one of"):
        init.run_init(
            tmp_path / "a.toml",
            assume_yes=True,
            force=False,
            defaults=init.InitAnswers(channel="irc"),
            detect=NOTHING,
        )
    with pytest.raises(HealbotError, match="is not a directory"):
        init.run_init(
            tmp_path / "no" / "a.toml",
            assume_yes=True,
            force=False,
            defaults=init.InitAnswers(),
            detect=NOTHING,
        )
    assert list(tmp_path.iterdir()) == []


def test_interview_asks_and_retries_bad_answers(tmp_path: Path) -> None:
    detected = [
        init.DetectedService("web", init.ManagerKind.DOCKER, (("container", "web"),), ()),
        init.DetectedService("cron", init.ManagerKind.SYSTEMD, (("unit", "cron.service"),), ()),
    ]
    script = iter(["irc", "telegram", "abc", "7,8", "-100", "", "", str(tmp_path), "n"])
    questions: list[str] = []

    def ask(question: str) -> str:
        questions.append(question)
        return next(script)

    answers = init.interview(detected, ask, init.InitAnswers(state_dir="/var/lib/healbot"))
    assert answers.channel == "telegram"
    assert answers.approvers == ("7", "8")
    assert answers.chats == ("-100",)
    assert answers.state_dir == "/var/lib/healbot"
    assert [(c.service.name, c.repo) for c in answers.services] == [("web", str(tmp_path))]
    assert questions[0].startswith("Approval channel (console/telegram)")
    assert any("Watch cron" in q for q in questions)


def test_cli_init_non_interactive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "healbot.toml"
    assert main(["init", "--yes", "--no-detect", "-o", str(output), "--state-dir", str(tmp_path / "s")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert load_config(output, check_repos=False).services["app"].manager_type == "command"
    assert main(["init", "--yes", "--no-detect", "-o", str(output)]) == 1
    assert "already exists" in capsys.readouterr().err


def test_detect_all_skips_what_it_is_told(tmp_path: Path) -> None:
    run = Recorded({"docker": init.CommandOutput(0, recorded("docker-ps.jsonl"), "")})
    options = init.DetectOptions(
        pm2_home=str(tmp_path),
        supervisord_sockets=(str(tmp_path / "none.sock"),),
        skip=frozenset({init.ManagerKind.SYSTEMD}),
    )
    found = init.detect_all(options, run)
    assert {s.name for s in found} == {"db", "shop-web"}
    assert run.calls == [["docker", "ps", "--format", "{{json .}}"]]


def test_supervisord_seen_through_two_socket_paths_is_one_service(tmp_path: Path) -> None:
    """Regression (found by the README walkthrough): /var/run links to /run, so the default socket list
    reached one supervisord twice and init wrote `[services.shop]` twice, then crashed parsing it."""
    env = SupervisorEnv.start(
        tmp_path / "sv", [Program("shop", tiny_service_argv(), {"PORT": str(free_port())})]
    )
    link = tmp_path / "var-run"
    link.symlink_to(Path(env.socket_path).parent)
    try:
        env.wait_state("shop", "RUNNING")
        options = init.DetectOptions(
            supervisord_sockets=(env.socket_path, str(link / Path(env.socket_path).name)),
            skip=frozenset({init.ManagerKind.PM2, init.ManagerKind.SYSTEMD, init.ManagerKind.DOCKER}),
        )
        found = init.detect_all(options)
    finally:
        env.stop()
    assert [s.name for s in found] == ["shop"]
    text = init.render_config(init.non_interactive(found, init.InitAnswers()))
    init.validate(text, tmp_path / "healbot.toml")


def test_one_name_under_two_managers_gets_two_table_keys(tmp_path: Path) -> None:
    web_pm2 = init.DetectedService("web", init.ManagerKind.PM2, (("app", "web"),), ())
    web_unit = init.DetectedService("web", init.ManagerKind.SYSTEMD, (("unit", "web.service"),), ())
    web_docker = init.DetectedService("web", init.ManagerKind.DOCKER, (("container", "web"),), ())
    again = init.DetectedService("web", init.ManagerKind.DOCKER, (("container", "web2"),), ())
    found = init.with_unique_names([web_pm2, web_unit, web_docker, again])
    assert [s.name for s in found] == ["web", "web-systemd", "web-docker", "web-docker-2"]
    assert found[1].options == (("unit", "web.service"),)  # the manager still finds the original unit
    text = init.render_config(init.non_interactive(found, init.InitAnswers()))
    init.validate(text, tmp_path / "healbot.toml")
    assert set(tomllib.loads(text)["services"]) == {"web", "web-systemd", "web-docker", "web-docker-2"}


def test_a_config_that_does_not_parse_is_a_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    output = tmp_path / "healbot.toml"
    with pytest.raises(HealbotError, match=r"does not parse .*nothing was written"):
        init.write_config("[services.a]\n[services.a]\n", output, force=False)
    assert not output.exists()
