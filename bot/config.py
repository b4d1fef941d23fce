"""Load and validate `healbot.toml`. Unknown, missing or mistyped keys are errors naming key and file.

Secrets never live in the file: they come from the environment (HEALBOT_TELEGRAM_TOKEN, ANTHROPIC_API_KEY).
"""

from __future__ import annotations

import math
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bot.errors import ConfigError
from bot.interfaces import SandboxSettings
from bot.policy import parse_window

T = TypeVar("T")

MANAGER_TYPES = ("command", "supervisord", "pm2", "systemd", "docker")
RUNNER_TYPES = ("cli", "api", "messages_api")
TOOL_MODES = ("healbot", "builtin")
CHANNEL_TYPES = ("console", "telegram")
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True, slots=True)
class ClaudeConfig:
    runner: str = "cli"
    binary: str = "claude"
    model: str | None = None
    max_turns: int = 8
    max_budget_usd: float = 1.0
    timeout_s: float = 600.0  # wall clock per run
    idle_timeout_s: float = 120.0  # no stdout for this long = hung
    max_concurrent: int = 1
    base_url: str | None = None  # messages_api, or a gateway for the CLI
    # Variables copied from the bot's environment into Claude's (the environment is otherwise built
    # from scratch). Only names, never values, live in the file.
    pass_env: tuple[str, ...] = ()
    # "healbot": claude looks only through `healbot mcp` (every byte redacted); "builtin": its own
    # Read/Grep/Glob inside the repo, unredacted.
    tools: str = "healbot"
    max_tool_calls: int = 40  # per diagnosis; the next call ends it
    max_tool_bytes: int = 400_000  # of tool answers per diagnosis
    session_minutes: float = (
        60.0  # a service's next diagnosis resumes its Claude session within this (0: never)
    )
    session_messages: int = 8  # … unless this many diagnoses went into it already


@dataclass(frozen=True, slots=True)
class ApprovalConfig:
    channel: str = "console"
    expiry_s: float = 3600.0
    reminder_before_s: float = 600.0
    approvers: tuple[str, ...] = ()  # telegram user ids, as strings
    chats: tuple[str, ...] = ()
    second_approver_for_high_risk: bool = False
    telegram_base_url: str | None = None  # a Bot API server other than Telegram's (a local one, tests)
    # In a group with several healbots, /pause, /resume, /mute, /revert and /diagnose must then be
    # addressed (/pause@this_bot); unaddressed ones get a hint instead. /status, /help etc. always answer.
    require_addressing: bool = False


@dataclass(frozen=True, slots=True)
class HealthConfig:
    http_url: str | None = None
    http_timeout_s: float = 5.0
    tcp_port: int | None = None
    tcp_host: str = "127.0.0.1"
    process: bool = True
    window_s: float = 30.0  # how long errors are counted before and after a change
    settle_s: float = 3.0  # a restarted service must stay up this long


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    name: str
    repo: Path
    logs: tuple[Path, ...]
    manager_type: str
    manager_options: Mapping[str, object]
    health: HealthConfig
    allowed_paths: tuple[str, ...] = ()
    check_command: tuple[str, ...] = ()
    check_timeout_s: float = 300.0
    runbooks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    check_read_only_paths: tuple[str, ...] = ()  # shown read-only to the sandboxed check_command


GRACE_AFTER_RESTART_S = 60.0  # a service's start-up noise after healbot restarted it: not a new problem


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """`[policy]`: the limits of automatic remediation. Tripped → escalate only."""

    fixes_per_fingerprint_per_day: int = 3
    restarts_per_service: int = 3
    restart_window_s: float = 1800.0
    applies_per_day: int = 10
    maintenance_windows: tuple[str, ...] = ()  # "02:00-04:00" or "sun 02:00-04:00", UTC
    grace_after_restart_s: float = GRACE_AFTER_RESTART_S  # errors first seen this soon after healbot
    # restarted the service are its start-up noise: counted, not diagnosed


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """`[limits]`: what a flood of distinct errors may cost, per service and in all, per `period_s`.

    Beyond `new_incidents_per_service` (or `new_incidents` in all) an error with no incident yet is still
    counted, into one "error storm" incident of its service, announced once. Beyond the diagnosis caps an
    incident waits, open, for the next period.
    """

    period_s: float = 600.0
    new_incidents_per_service: int = 20
    new_incidents: int = 50
    diagnoses_per_service: int = 5
    diagnoses: int = 10


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """`[metrics]`: `/metrics` in the Prometheus text format (bot/observability/metrics.py)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 9464


ALERTS_TOKEN_ENV = "HEALBOT_ALERTS_TOKEN"  # noqa: S105 (a variable name, not a secret)


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    """`[alerts]`: the Alertmanager webhook receiver (bot/observability/alert_server.py). Its bearer token
    comes from the environment (ALERTS_TOKEN_ENV), never from the file."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 9465
    service_label: str = "service"  # the alert label that names a configured service
    max_body_bytes: int = 256 * 1024


@dataclass(frozen=True, slots=True)
class HealbotConfig:
    path: Path
    state_dir: Path
    poll_interval_s: float
    diagnose_every_s: float  # a fingerprint is diagnosed at most once per this while open
    max_samples: int
    claude: ClaudeConfig
    approval: ApprovalConfig
    services: Mapping[str, ServiceConfig]
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    sandbox: SandboxSettings = field(default_factory=SandboxSettings)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    log_format: str = "text"  # "json": one JSON object per log line, with service and incident ids
    host_name: str = field(default_factory=socket.gethostname)  # shown on cards: several hosts, one chat
    heartbeat_url: str | None = None  # a dead-man's switch pinged while scanning works
    heartbeat_interval_s: float = 60.0
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)

    @property
    def db_path(self) -> Path:
        return self.state_dir / "healbot.db"


# --- the range of every number ---------------------------------------------------------------------

_DAY_S = 86400.0
_FALLBACK_MAX = 1e6


@dataclass(frozen=True, slots=True)
class NumberRange:
    """Where a numeric key's value may lie: finite, above `low` (or at it when `low_included`), at most
    `high`. `whole` keys take integers only: 0.5 is an error, never truncated."""

    low: float
    high: float
    whole: bool = False
    low_included: bool = False
    unit: str = ""

    def admits(self, value: float) -> bool:
        if not math.isfinite(value) or value > self.high:
            return False
        return value >= self.low if self.low_included else value > self.low

    def describe(self) -> str:
        kind = "an integer" if self.whole else "a number"
        low = f"at least {_plain(self.low)}" if self.low_included else f"greater than {_plain(self.low)}"
        unit = f" {self.unit}" if self.unit else ""
        return f"{kind} {low} and at most {_plain(self.high)}{unit}"

    def reference(self) -> str:
        """The short form shown in the README's configuration reference."""
        kind = "integer" if self.whole else "number"
        low = "≥" if self.low_included else ">"
        return f"{kind} {low} {_plain(self.low)}, ≤ {_plain(self.high)}"


def _plain(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


def _count(low: int, high: int) -> NumberRange:
    return NumberRange(low, high, whole=True, low_included=True)


def _seconds(high: float, low: float = 0.0, *, low_included: bool = False) -> NumberRange:
    return NumberRange(low, high, low_included=low_included, unit="seconds")


def _minutes(high: float) -> NumberRange:
    return NumberRange(0.0, high, unit="minutes")


# Keys of service tables are written `services.*.key`. The highs are what a sane operator could want,
# low enough that every derived time stays representable (timers, timestamps, timedelta).
NUMBER_RANGES: Mapping[str, NumberRange] = {
    "healbot.poll_interval_s": _seconds(3600.0),
    "healbot.diagnose_every_s": _seconds(30 * _DAY_S),
    "healbot.max_samples": _count(1, 100),
    "healbot.heartbeat_interval_s": _seconds(_DAY_S),
    "claude.max_turns": _count(1, 500),
    "claude.max_budget_usd": NumberRange(0.0, 1000.0, unit="USD"),
    "claude.timeout_s": _seconds(_DAY_S),
    "claude.idle_timeout_s": _seconds(_DAY_S),
    "claude.max_concurrent": _count(1, 32),
    "claude.max_tool_calls": _count(1, 1000),
    "claude.max_tool_bytes": NumberRange(1000, 100_000_000, whole=True, low_included=True, unit="bytes"),
    "claude.session_minutes": NumberRange(0.0, 7 * 24 * 60.0, low_included=True, unit="minutes"),
    "claude.session_messages": _count(1, 1000),
    "approval.expiry_minutes": _minutes(7 * 24 * 60.0),
    "approval.reminder_minutes_before": _minutes(7 * 24 * 60.0),
    "policy.max_fixes_per_fingerprint_per_day": _count(1, 1000),
    "policy.max_restarts_per_service": _count(1, 1000),
    "policy.restart_window_minutes": _minutes(7 * 24 * 60.0),
    "policy.max_applies_per_day": _count(1, 10000),
    "policy.grace_after_restart_s": _seconds(_DAY_S, low_included=True),
    # the least a check needs: a Python or Node toolchain reserves a few hundred MB of address space
    "sandbox.memory_mb": _count(256, 1024 * 1024),
    "sandbox.max_processes": _count(8, 100_000),
    "sandbox.max_file_mb": _count(1, 1024 * 1024),
    "sandbox.tmp_mb": _count(16, 1024 * 1024),
    "limits.period_s": _seconds(_DAY_S),
    "limits.new_incidents_per_service": _count(1, 100_000),
    "limits.new_incidents": _count(1, 100_000),
    "limits.diagnoses_per_service": _count(1, 10_000),
    "limits.diagnoses": _count(1, 10_000),
    "metrics.port": _count(1, 65535),
    "alerts.port": _count(1, 65535),
    "alerts.max_body_kb": _count(1, 16 * 1024),
    "services.*.check_timeout_s": _seconds(_DAY_S),
    "services.*.health.http_timeout_s": _seconds(600.0),
    "services.*.health.tcp_port": _count(1, 65535),
    "services.*.health.window_s": _seconds(_DAY_S),
    "services.*.health.settle_s": _seconds(3600.0),
}


def number_range(key: str) -> NumberRange:
    """The range of a dotted key, service tables written `services.*.…`."""
    try:
        return NUMBER_RANGES[key]
    except KeyError:
        raise AssertionError(f"no range for numeric key {key}: add it to NUMBER_RANGES") from None


# --- a small typed reader over one TOML table -------------------------------------------------------


class _Table:
    """Reads keys from one TOML table, recording which were used so leftovers can be reported."""

    def __init__(self, data: Mapping[str, Any], where: str, path: str, pattern: str | None = None) -> None:
        self.data = data
        self.where = where
        self.pattern = where if pattern is None else pattern  # `where` with a service's name as `*`
        self.path = path
        self.used: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, path=self.path, key=self._key(key))

    def get(
        self, key: str, kind: type[T] | tuple[type, ...], default: T | None = None, *, required: bool = False
    ) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required:
                raise self.error(key, "is required but missing")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds:
            raise self.error(key, f"must be {_kind_name(kinds)}, not a boolean")
        if not isinstance(value, kinds):
            raise self.error(key, f"must be {_kind_name(kinds)}, not {type(value).__name__} {value!r}")
        return value

    def number(self, key: str, default: float) -> float:
        """A finite number within the range NUMBER_RANGES gives for this key."""
        allowed = number_range(f"{self.pattern}.{key}" if self.pattern else key)
        value = self.get(key, float, default)
        if isinstance(value, float) and allowed.admits(value):
            return value
        raise self.error(key, f"must be {allowed.describe()}, not {self.data.get(key, value)!r}")

    def whole(self, key: str, default: int) -> int:
        """An integer (never a fraction, never truncated) within the range NUMBER_RANGES gives."""
        allowed = number_range(f"{self.pattern}.{key}" if self.pattern else key)
        self.used.add(key)
        value = self.data.get(key, default)
        if isinstance(value, bool):
            raise self.error(key, f"must be {allowed.describe()}, not a boolean")
        if isinstance(value, int) and allowed.admits(value):
            return value
        raise self.error(key, f"must be {allowed.describe()}, not {value!r}")

    def optional_whole(self, key: str) -> int | None:
        self.used.add(key)
        return self.whole(key, 0) if key in self.data else None

    def positive(self, key: str, default: float) -> float:
        """A number > 0 for keys without an entry in NUMBER_RANGES: finite, at most 1e6."""
        value: float = self.get(key, float, default)
        if not (math.isfinite(value) and 0 < value <= _FALLBACK_MAX):
            raise self.error(
                key, f"must be a number greater than 0 and at most {_FALLBACK_MAX:g}, not {value!r}"
            )
        return value

    def str_list(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.get(key, list, None)
        if value is None:
            return default
        for item in value:
            if not isinstance(item, str):
                raise self.error(key, f"must be a list of strings; {item!r} is not a string")
        return tuple(value)

    def argv(self, key: str) -> tuple[str, ...]:
        argv = self.str_list(key)
        if key in self.data and not argv:
            raise self.error(key, 'must be a non-empty argv list, e.g. ["pytest", "-q"]')
        return argv

    def table(self, key: str, *, required: bool = False) -> _Table:
        value = self.get(key, dict, None, required=required)
        pattern = (
            "services.*" if self.where == "services" else (f"{self.pattern}.{key}" if self.pattern else key)
        )
        return _Table(value or {}, self._key(key), self.path, pattern)

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.error(unknown[0], f"unknown key (known here: {', '.join(sorted(self.used))})")


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "a list",
        dict: "a table",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)


# --- loading ----------------------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str], *, check_repos: bool = True) -> HealbotConfig:
    """Parse and validate; raise ConfigError naming the file and the key on the first problem."""
    cfg_path = Path(path)
    try:
        text = cfg_path.read_text(encoding="utf-8")
        raw = tomllib.loads(text)
    except FileNotFoundError:
        raise ConfigError("file not found", path=str(cfg_path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot be read: {exc}", path=str(cfg_path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"is not valid TOML: {_toml_problem(exc, text)}", path=str(cfg_path)) from None
    return parse_config(raw, cfg_path, check_repos=check_repos)


_TOML_LINE = re.compile(r"\(at line (\d+), column \d+\)")


def _toml_problem(exc: tomllib.TOMLDecodeError, text: str) -> str:
    """tomllib names only line and column: add the line itself, and for a key or table set twice, its name."""
    message = str(exc)
    found = _TOML_LINE.search(message)
    lines = text.splitlines()
    if found is None or not 0 < int(found.group(1)) <= len(lines):
        return message
    line = lines[int(found.group(1)) - 1].strip()
    if message.startswith(("Cannot overwrite a value", "Cannot declare")):
        name = line.split("=", 1)[0].strip().strip("[]").strip() if line else "?"
        return f"{name!r} is set twice ({message}): each key and table may appear once"
    return f"{message}: {line[:120]!r}"


def parse_config(raw: Mapping[str, Any], cfg_path: Path, *, check_repos: bool = True) -> HealbotConfig:
    root = _Table(raw, "", str(cfg_path))
    base = cfg_path.parent

    general = root.table("healbot")
    state_dir = _resolve(base, general.get("state_dir", str, "state"))
    poll_interval_s = general.number("poll_interval_s", 1.0)
    diagnose_every_s = general.number("diagnose_every_s", 3600.0)
    max_samples = general.whole("max_samples", 5)
    log_format = general.get("log_format", str, "text")
    if log_format not in LOG_FORMATS:
        raise general.error("log_format", f"must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    host_name = general.get("host_name", str, None) or socket.gethostname()
    heartbeat_url = general.get("heartbeat_url", str, None)
    if heartbeat_url is not None and not heartbeat_url.startswith(("http://", "https://")):
        raise general.error("heartbeat_url", "must start with http:// or https://")
    heartbeat_interval_s = general.number("heartbeat_interval_s", 60.0)
    general.finish()

    claude = _claude(root.table("claude"))
    approval = _approval(root.table("approval"))
    policy = _policy(root.table("policy"))
    sandbox = _sandbox(root.table("sandbox"))
    limits = _limits(root.table("limits"))
    metrics = _metrics(root.table("metrics"))
    alerts = _alerts(root.table("alerts"))

    services_table = root.table("services", required=True)
    if not services_table.data:
        raise services_table.error("", "must define at least one service, e.g. [services.web]")
    services: dict[str, ServiceConfig] = {}
    for name in services_table.data:
        services[name] = _service(name, services_table.table(name), base, check_repos=check_repos)
    services_table.finish()
    _refuse_shared_logs(services_table, services)
    root.finish()

    return HealbotConfig(
        path=cfg_path,
        state_dir=state_dir,
        poll_interval_s=poll_interval_s,
        diagnose_every_s=diagnose_every_s,
        max_samples=max_samples,
        claude=claude,
        approval=approval,
        services=services,
        policy=policy,
        sandbox=sandbox,
        limits=limits,
        log_format=log_format,
        host_name=host_name,
        heartbeat_url=heartbeat_url,
        heartbeat_interval_s=heartbeat_interval_s,
        metrics=metrics,
        alerts=alerts,
    )


def _refuse_shared_logs(services_table: _Table, services: Mapping[str, ServiceConfig]) -> None:
    """One log file, one service: read by two, every error would open two incidents and two diagnoses."""
    owner: dict[Path, str] = {}
    for name, cfg in services.items():
        for log_path in cfg.logs:
            first = owner.setdefault(log_path, name)
            if first != name:
                raise services_table.error(
                    f"{name}.logs",
                    f"{log_path} is also a log of services.{first}: each log file belongs to one service",
                )


def _resolve(base: Path, value: str) -> Path:
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else (base / p).resolve()


def _claude(t: _Table) -> ClaudeConfig:
    runner = t.get("runner", str, "cli")
    if runner not in RUNNER_TYPES:
        raise t.error("runner", f"must be one of {', '.join(RUNNER_TYPES)}, not {runner!r}")
    tools = t.get("tools", str, "healbot")
    if tools not in TOOL_MODES:
        raise t.error("tools", f"must be one of {', '.join(TOOL_MODES)}, not {tools!r}")
    max_turns = t.whole("max_turns", 8)
    max_concurrent = t.whole("max_concurrent", 1)
    for key in ("api_key", "token", "anthropic_api_key"):
        if key in t.data:
            raise t.error(
                key, "secrets must not be in the config file; set ANTHROPIC_API_KEY in the environment"
            )
    cfg = ClaudeConfig(
        runner=runner,
        binary=t.get("binary", str, "claude"),
        model=t.get("model", str, None),
        max_turns=max_turns,
        max_budget_usd=t.number("max_budget_usd", 1.0),
        timeout_s=t.number("timeout_s", 600.0),
        idle_timeout_s=t.number("idle_timeout_s", 120.0),
        max_concurrent=max_concurrent,
        base_url=t.get("base_url", str, None),
        pass_env=t.str_list("pass_env"),
        tools=tools,
        max_tool_calls=t.whole("max_tool_calls", 40),
        max_tool_bytes=t.whole("max_tool_bytes", 400_000),
        session_minutes=t.number("session_minutes", 60.0),
        session_messages=t.whole("session_messages", 8),
    )
    t.finish()
    return cfg


def _approval(t: _Table) -> ApprovalConfig:
    channel = t.get("channel", str, "console")
    if channel not in CHANNEL_TYPES:
        raise t.error("channel", f"must be one of {', '.join(CHANNEL_TYPES)}, not {channel!r}")
    for key in ("token", "bot_token", "telegram_token"):
        if key in t.data:
            raise t.error(
                key, "secrets must not be in the config file; set HEALBOT_TELEGRAM_TOKEN in the environment"
            )
    expiry_s = t.number("expiry_minutes", 60.0) * 60.0
    reminder_s = t.number("reminder_minutes_before", 10.0) * 60.0
    if reminder_s >= expiry_s:
        raise t.error("reminder_minutes_before", "must be shorter than expiry_minutes")
    approvers = tuple(str(v) for v in _int_or_str_list(t, "approvers"))
    chats = tuple(str(v) for v in _int_or_str_list(t, "chats"))
    if channel == "telegram" and not approvers:
        raise t.error("approvers", "is required for the telegram channel: the user ids allowed to act")
    if channel == "telegram" and not chats:
        raise t.error("chats", "is required for the telegram channel: the chat ids healbot talks in")
    cfg = ApprovalConfig(
        channel=channel,
        expiry_s=expiry_s,
        reminder_before_s=reminder_s,
        approvers=approvers,
        chats=chats,
        second_approver_for_high_risk=t.get("second_approver_for_high_risk", bool, False),
        telegram_base_url=t.get("telegram_base_url", str, None),
        require_addressing=t.get("require_addressing", bool, False),
    )
    t.finish()
    return cfg


def _policy(t: _Table) -> PolicyConfig:
    counts = {}
    for key, default in (
        ("max_fixes_per_fingerprint_per_day", 3),
        ("max_restarts_per_service", 3),
        ("max_applies_per_day", 10),
    ):
        counts[key] = t.whole(key, default)
    windows = t.str_list("maintenance_windows")
    for window in windows:
        try:
            parse_window(window)
        except ValueError as exc:
            raise t.error("maintenance_windows", str(exc)) from None
    grace = t.number("grace_after_restart_s", GRACE_AFTER_RESTART_S)
    cfg = PolicyConfig(
        fixes_per_fingerprint_per_day=counts["max_fixes_per_fingerprint_per_day"],
        restarts_per_service=counts["max_restarts_per_service"],
        restart_window_s=t.number("restart_window_minutes", 30.0) * 60.0,
        applies_per_day=counts["max_applies_per_day"],
        maintenance_windows=windows,
        grace_after_restart_s=grace,
    )
    t.finish()
    return cfg


_SANDBOX_NUMBERS = ("memory_mb", "max_processes", "max_file_mb", "tmp_mb")


def _sandbox(t: _Table) -> SandboxSettings:
    """`[sandbox]`: how check_command is confined (bubblewrap); see healers/sandbox.py."""
    defaults = SandboxSettings()
    texts = {}
    for key in ("bwrap", "user"):
        value = t.get(key, str, getattr(defaults, key)).strip()
        if not value:
            raise t.error(key, "must not be empty")
        texts[key] = value
    if texts["user"] in ("root", "0"):
        raise t.error("user", "must be an unprivileged user, not root: the check runs code no one approved")
    numbers = {key: t.whole(key, getattr(defaults, key)) for key in _SANDBOX_NUMBERS}
    t.finish()
    return SandboxSettings(bwrap=texts["bwrap"], user=texts["user"], **numbers)


_DEFAULT_LIMITS = LimitsConfig()


def _limits(t: _Table) -> LimitsConfig:
    period_s = t.number("period_s", _DEFAULT_LIMITS.period_s)
    counts = {
        key: t.whole(key, getattr(_DEFAULT_LIMITS, key))
        for key in ("new_incidents_per_service", "new_incidents", "diagnoses_per_service", "diagnoses")
    }
    for per_service, total in (
        ("new_incidents_per_service", "new_incidents"),
        ("diagnoses_per_service", "diagnoses"),
    ):
        if counts[per_service] > counts[total]:
            raise t.error(
                per_service,
                f"must not exceed {total} ({counts[per_service]} > {counts[total]}): one service could"
                " then use up what the others need",
            )
    t.finish()
    return LimitsConfig(period_s=period_s, **counts)


def _listen_host(t: _Table, default: str) -> str:
    host = str(t.get("host", str, default)).strip()
    if not host or any(c.isspace() or c in "/[]" for c in host):
        raise t.error("host", f"must be an IP address or host name to listen on, not {host!r}")
    return host


_DEFAULT_METRICS = MetricsConfig()
_DEFAULT_ALERTS = AlertsConfig()


def _metrics(t: _Table) -> MetricsConfig:
    cfg = MetricsConfig(
        enabled=t.get("enabled", bool, False),
        host=_listen_host(t, _DEFAULT_METRICS.host),
        port=t.whole("port", _DEFAULT_METRICS.port),
    )
    t.finish()
    return cfg


def _alerts(t: _Table) -> AlertsConfig:
    for key in ("token", "bearer_token"):
        if key in t.data:
            raise t.error(
                key, f"secrets must not be in the config file; set {ALERTS_TOKEN_ENV} in the environment"
            )
    label = t.get("service_label", str, _DEFAULT_ALERTS.service_label)
    if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", label):
        raise t.error("service_label", f"must be a Prometheus label name, not {label!r}")
    cfg = AlertsConfig(
        enabled=t.get("enabled", bool, False),
        host=_listen_host(t, _DEFAULT_ALERTS.host),
        port=t.whole("port", _DEFAULT_ALERTS.port),
        service_label=label,
        max_body_bytes=t.whole("max_body_kb", _DEFAULT_ALERTS.max_body_bytes // 1024) * 1024,
    )
    t.finish()
    return cfg


def _int_or_str_list(t: _Table, key: str) -> list[int | str]:
    value = t.get(key, list, [])
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int | str):
            raise t.error(key, f"must be a list of ids; {item!r} is not an id")
    return list(value)


def _service(name: str, t: _Table, base: Path, *, check_repos: bool) -> ServiceConfig:
    repo = _resolve(base, t.get("repo", str, required=True))
    if check_repos:
        if not repo.is_dir():
            raise t.error("repo", f"{repo} is not a directory")
        if not (repo / ".git").exists():
            raise t.error("repo", f"{repo} is not a git repository (no .git); run `git init` there first")
    logs = tuple(_resolve(base, p) for p in t.str_list("logs"))

    manager = t.table("manager", required=True)
    manager_type = manager.get("type", str, required=True)
    if manager_type not in MANAGER_TYPES:
        raise manager.error("type", f"must be one of {', '.join(MANAGER_TYPES)}, not {manager_type!r}")
    manager_options = {k: v for k, v in manager.data.items() if k != "type"}

    h = t.table("health")
    health = HealthConfig(
        http_url=h.get("http_url", str, None),
        http_timeout_s=h.number("http_timeout_s", 5.0),
        tcp_port=h.optional_whole("tcp_port"),
        tcp_host=h.get("tcp_host", str, "127.0.0.1"),
        process=h.get("process", bool, True),
        window_s=h.number("window_s", 30.0),
        settle_s=h.number("settle_s", 3.0),
    )
    if health.http_url is not None and not health.http_url.startswith(("http://", "https://")):
        raise h.error("http_url", f"must start with http:// or https://, not {health.http_url!r}")
    h.finish()

    runbooks_table = t.table("runbooks")
    runbooks = {rb: runbooks_table.argv(rb) for rb in list(runbooks_table.data)}
    runbooks_table.finish()

    allowed_paths = t.str_list("allowed_paths")
    for pattern in allowed_paths:
        if pattern.startswith("/") or ".." in Path(pattern).parts:
            raise t.error("allowed_paths", f"{pattern!r} must be relative to the repo and stay inside it")

    read_only_paths = t.str_list("check_read_only_paths")
    for ro_path in read_only_paths:
        if not ro_path.startswith("/") or ro_path.rstrip("/") == "" or ".." in Path(ro_path).parts:
            raise t.error(
                "check_read_only_paths", f"{ro_path!r} must be an absolute path below / (not / itself)"
            )

    cfg = ServiceConfig(
        name=name,
        repo=repo,
        logs=logs,
        manager_type=manager_type,
        manager_options=manager_options,
        health=health,
        allowed_paths=allowed_paths,
        check_command=t.argv("check_command"),
        check_timeout_s=t.number("check_timeout_s", 300.0),
        runbooks=runbooks,
        check_read_only_paths=read_only_paths,
    )
    t.finish()
    return cfg
