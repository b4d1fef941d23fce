"""`healbot init`: find the services on this host and write a commented, loadable `healbot.toml`.

Detection asks each process manager directly (never through healers/): PM2 with `pm2 jlist` (only when a
daemon already runs: any pm2 call would otherwise spawn one), supervisord over its XML-RPC unix socket,
systemd with `systemctl list-units --output=json` (leaving out the units packages installed: journald,
dbus, cron, ... are not services to heal), docker with `docker ps --format "{{json .}}"`. A manager
that is absent or does not answer simply contributes nothing.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path

import psutil

from bot import proc, supervisor_rpc
from bot.config import CHANNEL_TYPES, parse_config
from bot.errors import ConfigError, HealbotError, ServiceError

DETECT_TIMEOUT_S = 15.0
SUPERVISORD_SOCKETS = (
    "/run/supervisor.sock",
    "/var/run/supervisor.sock",
    "/run/supervisord.sock",
    "/var/run/supervisord.sock",
    "/tmp/supervisor.sock",
)
_PM2_PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class ManagerKind(Enum):
    PM2 = "pm2"
    SUPERVISORD = "supervisord"
    SYSTEMD = "systemd"
    DOCKER = "docker"
    COMMAND = "command"


@dataclass(frozen=True, slots=True)
class CommandOutput:
    returncode: int
    stdout: str
    stderr: str


CommandRunner = Callable[[Sequence[str], Mapping[str, str] | None], CommandOutput]


@dataclass(frozen=True, slots=True)
class DetectedService:
    name: str
    manager: ManagerKind
    options: tuple[tuple[str, str], ...]  # [services.NAME.manager] keys besides `type`
    log_paths: tuple[str, ...]  # where the manager keeps its logs (read by healbot through the manager)
    repo_guess: str | None = None  # the working directory, when the manager tells it
    state: str = ""

    def describe(self) -> str:
        logs = ", ".join(self.log_paths) or "-"
        return f"{self.name} ({self.manager.value}, {self.state or 'state unknown'}; logs: {logs})"


@dataclass(frozen=True, slots=True)
class ServiceChoice:
    service: DetectedService
    repo: str


@dataclass(frozen=True, slots=True)
class InitAnswers:
    channel: str = "console"
    state_dir: str = "/var/lib/healbot"
    approvers: tuple[str, ...] = ()
    chats: tuple[str, ...] = ()
    services: tuple[ServiceChoice, ...] = ()


@dataclass(frozen=True, slots=True)
class DetectOptions:
    pm2_home: str | None = None
    pm2_binary: str = "pm2"
    supervisord_sockets: tuple[str, ...] = SUPERVISORD_SOCKETS
    systemctl: str = "systemctl"
    docker: str = "docker"
    timeout_s: float = DETECT_TIMEOUT_S
    skip: frozenset[ManagerKind] = field(default_factory=frozenset)


# --- running tools --------------------------------------------------------------------------------------


def subprocess_runner(timeout_s: float = DETECT_TIMEOUT_S) -> CommandRunner:
    """bot.proc.run with a fixed timeout; a missing tool answers 127 and a timeout 124, like a shell."""

    def run(argv: Sequence[str], env: Mapping[str, str] | None) -> CommandOutput:
        try:
            result = proc.run(argv, timeout_s=timeout_s, env=env)
        except HealbotError as exc:
            return CommandOutput(127, "", str(exc))
        if result.returncode is None:
            return CommandOutput(124, "", f"{argv[0]} did not answer within {timeout_s:g}s")
        return CommandOutput(result.returncode, result.stdout_text, result.stderr_text)

    return run


# --- detection ------------------------------------------------------------------------------------------


def detect_all(options: DetectOptions, run: CommandRunner | None = None) -> list[DetectedService]:
    run = run or subprocess_runner(options.timeout_s)
    found: list[DetectedService] = []
    if ManagerKind.PM2 not in options.skip:
        found += detect_pm2(run, pm2_home=options.pm2_home, binary=options.pm2_binary)
    if ManagerKind.SUPERVISORD not in options.skip:
        asked: set[str] = set()
        for path in options.supervisord_sockets:
            real = os.path.realpath(supervisor_rpc.strip_scheme(path))
            if real not in asked:  # /var/run is usually a link to /run: one supervisord, two paths
                asked.add(real)
                found += detect_supervisord(path, timeout_s=options.timeout_s)
    if ManagerKind.SYSTEMD not in options.skip:
        found += detect_systemd(run, systemctl=options.systemctl)
    if ManagerKind.DOCKER not in options.skip:
        found += detect_docker(run, docker=options.docker)
    return with_unique_names(found)


def with_unique_names(found: Sequence[DetectedService]) -> list[DetectedService]:
    """Service names are config table keys: a name seen twice (a PM2 app and a systemd unit both called
    `web`) gets its manager appended, then a number."""
    taken: set[str] = set()
    unique: list[DetectedService] = []
    for service in found:
        name = service.name
        if name in taken:
            name = f"{service.name}-{service.manager.value}"
            number = 2
            while name in taken:
                name = f"{service.name}-{service.manager.value}-{number}"
                number += 1
        taken.add(name)
        unique.append(service if name == service.name else replace(service, name=name))
    return unique


def pm2_daemon_running(pm2_home: str) -> bool:
    try:
        pid = int((Path(pm2_home) / "pm2.pid").read_text().strip())
    except (OSError, ValueError):
        return False
    return psutil.pid_exists(pid)


def detect_pm2(run: CommandRunner, *, pm2_home: str | None, binary: str = "pm2") -> list[DetectedService]:
    home = pm2_home or os.environ.get("PM2_HOME") or str(Path.home() / ".pm2")
    if not pm2_daemon_running(home):
        return []  # calling pm2 now would spawn a daemon
    env = {k: os.environ[k] for k in _PM2_PASSED_ENV if k in os.environ}
    env["PM2_HOME"] = home
    out = run([binary, "jlist"], env)
    if out.returncode != 0:
        return []
    try:
        entries = json.loads(out.stdout)
    except json.JSONDecodeError:
        return []
    found: dict[str, DetectedService] = {}
    default_home = home == str(Path.home() / ".pm2")
    for entry in entries if isinstance(entries, list) else []:
        # pm2_env holds the app's whole environment: read only named fields.
        pm2_env = entry.get("pm2_env") if isinstance(entry, dict) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not isinstance(pm2_env, dict) or name in found:
            continue
        logs = tuple(
            p for p in (pm2_env.get("pm_out_log_path"), pm2_env.get("pm_err_log_path")) if isinstance(p, str)
        )
        options: list[tuple[str, str]] = [("app", name)]
        if not default_home:
            options.append(("pm2_home", home))
        if binary != "pm2":
            options.append(("binary", binary))
        cwd = pm2_env.get("pm_cwd")
        status = pm2_env.get("status")
        found[name] = DetectedService(
            name,
            ManagerKind.PM2,
            tuple(options),
            logs,
            repo_guess=cwd if isinstance(cwd, str) else None,
            state=status if isinstance(status, str) else "",
        )
    return list(found.values())


def detect_supervisord(socket_path: str, *, timeout_s: float = DETECT_TIMEOUT_S) -> list[DetectedService]:
    socket_path = supervisor_rpc.strip_scheme(socket_path)
    if not os.path.exists(socket_path):
        return []
    try:
        infos = supervisor_rpc.call(socket_path, "getAllProcessInfo", timeout_s=timeout_s)
    except ServiceError:
        return []
    found = []
    for info in infos if isinstance(infos, list) else []:
        name, group = info.get("name"), info.get("group")
        if not isinstance(name, str) or not isinstance(group, str):
            continue
        program = name if group == name else f"{group}:{name}"
        logs = tuple(
            p
            for p in (info.get("stdout_logfile"), info.get("stderr_logfile"))
            if isinstance(p, str) and p and p != "/dev/null"
        )
        found.append(
            DetectedService(
                name,
                ManagerKind.SUPERVISORD,
                (("socket", socket_path), ("program", program)),
                logs,
                state=str(info.get("statename", "")),
            )
        )
    return found


PACKAGE_UNIT_DIRS = ("/lib/systemd/", "/usr/lib/systemd/")


def detect_systemd(run: CommandRunner, *, systemctl: str = "systemctl") -> list[DetectedService]:
    out = run(
        [systemctl, "list-units", "--type=service", "--state=running", "--output=json", "--no-pager"], None
    )
    if out.returncode != 0:
        return []
    try:
        units = json.loads(out.stdout)
    except json.JSONDecodeError:
        return []
    running = [
        unit
        for unit in (units if isinstance(units, list) else [])
        if isinstance(unit, dict) and isinstance(unit.get("unit"), str) and unit["unit"].endswith(".service")
    ]
    from_packages = units_from_packages(run, systemctl, [unit["unit"] for unit in running])
    found = []
    for unit in running:
        name = unit["unit"]
        if name in from_packages:
            continue
        found.append(
            DetectedService(
                name.removesuffix(".service"),
                ManagerKind.SYSTEMD,
                (("unit", name),),
                (f"journald: journalctl -u {name}",),
                state=str(unit.get("sub", "")),
            )
        )
    return found


def units_from_packages(run: CommandRunner, systemctl: str, names: Sequence[str]) -> set[str]:
    """The units whose file a package installed (under /lib/systemd or /usr/lib/systemd): the system's own
    daemons (journald, dbus, cron, ...), not services with a repo to heal. An operator's units live in
    /etc/systemd/system. When systemctl cannot tell, none are left out."""
    if not names:
        return set()
    out = run([systemctl, "show", "--property=Id,FragmentPath", "--no-pager", *names], None)
    if out.returncode != 0:
        return set()
    packaged = set()
    for block in out.stdout.split("\n\n"):
        properties = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if properties.get("FragmentPath", "").startswith(PACKAGE_UNIT_DIRS):
            packaged.add(properties.get("Id", ""))
    return packaged


def detect_docker(run: CommandRunner, *, docker: str = "docker") -> list[DetectedService]:
    # not `--format json`: docker 23+ only; Debian 12's docker.io 20.10 prints the word "json" per container
    out = run([docker, "ps", "--format", "{{json .}}"], None)
    if out.returncode != 0:
        return []
    found = []
    for line in out.stdout.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        names = row.get("Names") if isinstance(row, dict) else None
        if not isinstance(names, str) or not names:
            continue
        container = names.split(",")[0]
        found.append(
            DetectedService(
                container,
                ManagerKind.DOCKER,
                (("container", container),),
                (f"docker logs {container}",),
                state=str(row.get("State", "")),
            )
        )
    return found


# --- rendering ------------------------------------------------------------------------------------------


def toml_string(value: str) -> str:
    escaped = []
    for ch in value:
        if ch in ('"', "\\"):
            escaped.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            escaped.append(f"\\u{ord(ch):04x}")
        else:
            escaped.append(ch)
    return '"' + "".join(escaped) + '"'


def toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else toml_string(key)


def _str_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(toml_string(v) for v in values) + "]"


def render_config(answers: InitAnswers) -> str:
    if answers.channel not in CHANNEL_TYPES:
        raise ConfigError(f"channel must be one of {', '.join(CHANNEL_TYPES)}, not {answers.channel!r}")
    lines = [
        "# healbot configuration, written by `healbot init`. Check it, then run `healbot doctor -c <this file>`.",
        '# Secrets never go here: HEALBOT_TELEGRAM_TOKEN (and ANTHROPIC_API_KEY for runner = "api") come',
        "# from the environment. Every key is described in the README's configuration reference.",
        "",
        "[healbot]",
        "# SQLite state (incidents, approvals, audit log); must be writable by the healbot user.",
        f"state_dir = {toml_string(answers.state_dir)}",
        "",
        "[claude]",
        '# "cli" runs `claude -p` on your own subscription login; "api" uses the Messages API with a key.',
        'runner = "cli"',
        'binary = "claude"',
        "max_budget_usd = 1.0  # per diagnosis",
        "",
        "[approval]",
        '# "console" asks in the terminal; "telegram" sends cards with buttons (set HEALBOT_TELEGRAM_TOKEN).',
        f"channel = {toml_string(answers.channel)}",
        "expiry_minutes = 60",
    ]
    if answers.approvers or answers.channel == "telegram":
        lines.append(f"approvers = {_str_list(answers.approvers)}  # Telegram user ids allowed to approve")
    if answers.chats or answers.channel == "telegram":
        lines.append(f"chats = {_str_list(answers.chats)}  # Telegram chat ids healbot talks in")
    for choice in answers.services or (_placeholder_choice(),):
        lines += ["", *_service_lines(choice)]
    return "\n".join(lines) + "\n"


def _placeholder_choice() -> ServiceChoice:
    placeholder = DetectedService(
        "app", ManagerKind.COMMAND, (("restart", "/usr/local/bin/app-restart"),), (), state="not detected"
    )
    return ServiceChoice(placeholder, ".")


def _service_lines(choice: ServiceChoice) -> list[str]:
    service = choice.service
    key = f"services.{toml_key(service.name)}"
    lines = [f"[{key}]"]
    if service.manager is ManagerKind.COMMAND:
        lines.append("# No service was detected: adapt this example (name, repo, logs, restart command).")
    else:
        lines.append(f"# Found under {service.manager.value} ({service.state or 'state unknown'}).")
    lines.append("# The git checkout of the service's code: fixes are committed here.")
    lines.append(f"repo = {toml_string(choice.repo)}")
    if service.log_paths:
        lines.append("# healbot reads these through the manager: " + ", ".join(service.log_paths))
    lines.append("logs = []  # extra log files to watch")
    lines.append('# allowed_paths = ["app/**"]  # globs a fix may touch')
    lines += ["", f"[{key}.manager]", f"type = {toml_string(service.manager.value)}"]
    for option, value in service.options:
        rendered = _str_list([value]) if option == "restart" else toml_string(value)
        lines.append(f"{option} = {rendered}")
    lines += ["", f"[{key}.health]", "process = true", '# http_url = "http://127.0.0.1:8080/health"']
    return lines


def validate(text: str, output: Path) -> None:
    """The rendered text must load like any config (repos are not checked: they may not exist yet)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise HealbotError(
            f"the config healbot init wrote does not parse ({exc}); nothing was written"
        ) from exc
    parse_config(data, output, check_repos=False)


def write_config(text: str, output: Path, *, force: bool) -> None:
    if output.exists() and not force:
        raise HealbotError(f"{output} already exists; pass --force to overwrite it")
    if not output.parent.is_dir():
        raise HealbotError(f"{output.parent} is not a directory")
    validate(text, output)
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, 0o640)
    os.replace(tmp, output)


# --- the conversation -----------------------------------------------------------------------------------


Ask = Callable[[str], str]


def interview(detected: Sequence[DetectedService], ask: Ask, defaults: InitAnswers) -> InitAnswers:
    channel = _ask_choice(ask, "Approval channel", CHANNEL_TYPES, defaults.channel)
    approvers, chats = defaults.approvers, defaults.chats
    if channel == "telegram":
        approvers = _ask_ids(ask, "Telegram user ids allowed to approve (comma separated)", approvers)
        chats = _ask_ids(ask, "Telegram chat ids healbot talks in (comma separated)", chats)
    state_dir = ask(f"State directory [{defaults.state_dir}]: ").strip() or defaults.state_dir
    choices = []
    for service in detected:
        include = ask(f"Watch {service.describe()}? [Y/n]: ").strip().lower()
        if include in ("n", "no"):
            continue
        guess = service.repo_guess or f"/srv/{service.name}"
        repo = ask(f"  git checkout of {service.name}'s code [{guess}]: ").strip() or guess
        choices.append(ServiceChoice(service, repo))
    return InitAnswers(channel, state_dir, approvers, chats, tuple(choices))


def _ask_choice(ask: Ask, question: str, options: Sequence[str], default: str) -> str:
    while True:
        answer = ask(f"{question} ({'/'.join(options)}) [{default}]: ").strip() or default
        if answer in options:
            return answer
        print(f"  please answer one of: {', '.join(options)}")


def _ask_ids(ask: Ask, question: str, default: tuple[str, ...]) -> tuple[str, ...]:
    while True:
        shown = ",".join(default)
        answer = ask(f"{question} [{shown}]: ").strip() or shown
        ids = tuple(part.strip() for part in answer.split(",") if part.strip())
        if ids and all(re.fullmatch(r"-?\d+", i) for i in ids):
            return ids
        print("  please give numeric ids, e.g. 123456789")


def non_interactive(detected: Sequence[DetectedService], defaults: InitAnswers) -> InitAnswers:
    choices = tuple(ServiceChoice(s, s.repo_guess or f"/srv/{s.name}") for s in detected)
    return InitAnswers(defaults.channel, defaults.state_dir, defaults.approvers, defaults.chats, choices)


def run_init(
    output: Path,
    *,
    assume_yes: bool,
    force: bool,
    defaults: InitAnswers,
    detect: DetectOptions,
    ask: Ask = input,
    run: CommandRunner | None = None,
) -> int:
    if output.exists() and not force:
        raise HealbotError(f"{output} already exists; pass --force to overwrite it")
    if defaults.channel not in CHANNEL_TYPES:
        raise HealbotError(f"--channel must be one of {', '.join(CHANNEL_TYPES)}, not {defaults.channel!r}")
    detected = detect_all(detect, run)
    for service in detected:
        print(f"found {service.describe()}")
    if not detected:
        print("no services found under PM2, supervisord, systemd or docker; writing an example service")
    answers = non_interactive(detected, defaults) if assume_yes else interview(detected, ask, defaults)
    text = render_config(answers)
    write_config(text, output, force=force)
    print(f"wrote {output}; next: healbot doctor -c {output}")
    return 0
