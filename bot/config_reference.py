"""The configuration reference in README.md, rendered from one table of every `healbot.toml` key.

`python -m bot.config_reference` prints the block; tests/test_config_reference.py keeps README.md equal to
it and this table equal to the keys bot/config.py accepts.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.config import GRACE_AFTER_RESTART_S, number_range

START_MARK = "<!-- config-reference:start -->"
END_MARK = "<!-- config-reference:end -->"


def num(key: str) -> str:
    """The type column of a numeric key, from the range bot/config.py enforces."""
    return number_range(key).reference()


@dataclass(frozen=True, slots=True)
class Key:
    name: str
    type: str
    default: str  # as written in TOML; "required" or "-" (unset)
    meaning: str


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    about: str
    keys: tuple[Key, ...]


REFERENCE: tuple[Table, ...] = (
    Table(
        "healbot",
        "the daemon itself",
        (
            Key("state_dir", "path", '"state"', "SQLite state and audit log; relative to the config file"),
            Key("poll_interval_s", num("healbot.poll_interval_s"), "1.0", "seconds between log polls"),
            Key(
                "diagnose_every_s",
                num("healbot.diagnose_every_s"),
                "3600",
                "an open fingerprint is diagnosed at most this often",
            ),
            Key("max_samples", num("healbot.max_samples"), "5", "log samples kept per incident"),
            Key(
                "log_format",
                "string",
                '"text"',
                '"text" or "json" (one object per line, with service and incident ids)',
            ),
            Key(
                "host_name", "string", "this host's name", "shown on cards: several hosts can share one chat"
            ),
            Key("heartbeat_url", "string", "-", "a dead-man's switch URL pinged while scanning works"),
            Key(
                "heartbeat_interval_s",
                num("healbot.heartbeat_interval_s"),
                "60",
                "how often heartbeat_url is pinged",
            ),
        ),
    ),
    Table(
        "claude",
        "how Claude is asked",
        (
            Key(
                "runner", "string", '"cli"', '"cli" (`claude -p`, your subscription) or "api"/"messages_api"'
            ),
            Key("binary", "string", '"claude"', "the claude CLI: a name on PATH or a path"),
            Key("model", "string", "-", "model name; unset: the CLI's or API's default"),
            Key("max_turns", num("claude.max_turns"), "8", "agent turns per diagnosis"),
            Key("max_budget_usd", num("claude.max_budget_usd"), "1.0", "spending cap per diagnosis"),
            Key("timeout_s", num("claude.timeout_s"), "600", "wall clock per diagnosis"),
            Key(
                "idle_timeout_s",
                num("claude.idle_timeout_s"),
                "120",
                "no output for this long = hung; the process group is killed",
            ),
            Key("max_concurrent", num("claude.max_concurrent"), "1", "diagnoses running at once"),
            Key("base_url", "string", "-", "a Messages API endpoint (api runner) or gateway (cli)"),
            Key(
                "tools",
                "string",
                '"healbot"',
                '"healbot": Claude looks only through `healbot mcp` (every answer redacted); "builtin": '
                "claude's own Read/Grep/Glob in the repo, unredacted",
            ),
            Key(
                "max_tool_calls",
                num("claude.max_tool_calls"),
                "40",
                "tool calls per diagnosis; the next one ends it with a note",
            ),
            Key(
                "max_tool_bytes",
                num("claude.max_tool_bytes"),
                "400000",
                "bytes of tool answers per diagnosis; past it the diagnosis ends with a note",
            ),
            Key(
                "session_minutes",
                num("claude.session_minutes"),
                "60",
                "a service's next diagnosis resumes its Claude session within this (0: always cold)",
            ),
            Key(
                "session_messages",
                num("claude.session_messages"),
                "8",
                "diagnoses per session before the next starts cold; /newsession <service> resets",
            ),
            Key(
                "pass_env",
                "list of strings",
                "[]",
                "names of variables copied into Claude's otherwise empty environment",
            ),
        ),
    ),
    Table(
        "approval",
        "who approves, where",
        (
            Key("channel", "string", '"console"', '"console" or "telegram"'),
            Key(
                "expiry_minutes",
                num("approval.expiry_minutes"),
                "60",
                "an unanswered proposal expires (never applied) after this",
            ),
            Key(
                "reminder_minutes_before",
                num("approval.reminder_minutes_before"),
                "10",
                "remind this long before expiry; < expiry_minutes",
            ),
            Key("approvers", "list of ids", "[]", "Telegram user ids allowed to act; required for telegram"),
            Key("chats", "list of ids", "[]", "Telegram chat ids healbot talks in; required for telegram"),
            Key(
                "second_approver_for_high_risk",
                "boolean",
                "false",
                "high-risk fixes need two different approvers",
            ),
            Key("telegram_base_url", "string", "-", "a Bot API server other than Telegram's"),
            Key(
                "require_addressing",
                "boolean",
                "false",
                "several healbots in one group: acting commands must be addressed (/pause@this_bot)",
            ),
        ),
    ),
    Table(
        "policy",
        "limits of automatic remediation; when tripped, healbot only escalates",
        (
            Key(
                "max_fixes_per_fingerprint_per_day",
                num("policy.max_fixes_per_fingerprint_per_day"),
                "3",
                "applied fixes per error fingerprint per day",
            ),
            Key(
                "max_restarts_per_service",
                num("policy.max_restarts_per_service"),
                "3",
                "restarts per service within restart_window_minutes",
            ),
            Key(
                "restart_window_minutes",
                num("policy.restart_window_minutes"),
                "30",
                "the window of max_restarts_per_service",
            ),
            Key(
                "max_applies_per_day",
                num("policy.max_applies_per_day"),
                "10",
                "applied changes per day, all services",
            ),
            Key(
                "maintenance_windows",
                "list of strings",
                "[]",
                '"02:00-04:00" or "sun 02:00-04:00" (UTC): no applies',
            ),
            Key(
                "grace_after_restart_s",
                num("policy.grace_after_restart_s"),
                f"{GRACE_AFTER_RESTART_S:g}",
                "this long after healbot restarted a service, its errors are counted, not diagnosed",
            ),
        ),
    ),
    Table(
        "sandbox",
        "how check_command is confined: it runs proposed code before anyone approved it (bubblewrap)",
        (
            Key("bwrap", "string", '"bwrap"', "the bubblewrap binary: a path, or a name on PATH"),
            Key("user", "string", '"nobody"', "when healbot runs as root, the check runs as this user"),
            Key(
                "memory_mb", num("sandbox.memory_mb"), "4096", "address-space limit of the check (RLIMIT_AS)"
            ),
            Key(
                "max_processes",
                num("sandbox.max_processes"),
                "256",
                "process limit of the check (RLIMIT_NPROC)",
            ),
            Key(
                "max_file_mb",
                num("sandbox.max_file_mb"),
                "1024",
                "largest file the check may write (RLIMIT_FSIZE)",
            ),
            Key("tmp_mb", num("sandbox.tmp_mb"), "512", "size of the check's private /tmp"),
        ),
    ),
    Table(
        "limits",
        "what a flood of distinct errors may cost, per period; beyond a cap errors are still counted",
        (
            Key("period_s", num("limits.period_s"), "600", "the window of every cap below"),
            Key(
                "new_incidents_per_service",
                num("limits.new_incidents_per_service"),
                "20",
                "new incidents a service may open per period; more new kinds of errors are counted in one "
                '"error storm" incident of the service, announced once; ≤ new_incidents',
            ),
            Key("new_incidents", num("limits.new_incidents"), "50", "new incidents per period, all services"),
            Key(
                "diagnoses_per_service",
                num("limits.diagnoses_per_service"),
                "5",
                "diagnoses queued per service per period (FIFO; claude.max_concurrent run at once); "
                "beyond it an incident waits, open; ≤ diagnoses",
            ),
            Key("diagnoses", num("limits.diagnoses"), "10", "diagnoses queued per period, all services"),
        ),
    ),
    Table(
        "metrics",
        "`/metrics` in the Prometheus text format, read from the state at scrape time",
        (
            Key("enabled", "boolean", "false", "serve /metrics"),
            Key("host", "string", '"127.0.0.1"', "address to listen on; another for a Prometheus elsewhere"),
            Key("port", num("metrics.port"), "9464", "TCP port of /metrics"),
        ),
    ),
    Table(
        "alerts",
        "an Alertmanager webhook receiver: a firing alert naming a service opens an incident",
        (
            Key(
                "enabled",
                "boolean",
                "false",
                "serve POST /alerts; needs the bearer token in HEALBOT_ALERTS_TOKEN (≥ 16 characters)",
            ),
            Key("host", "string", '"127.0.0.1"', "address to listen on"),
            Key("port", num("alerts.port"), "9465", "TCP port of the receiver"),
            Key(
                "service_label",
                "string",
                '"service"',
                "the alert label whose value names a configured service",
            ),
            Key("max_body_kb", num("alerts.max_body_kb"), "256", "larger requests are refused (413)"),
        ),
    ),
    Table(
        "services.NAME",
        "one per watched service",
        (
            Key(
                "repo", "path", "required", "the git checkout of the service's code; fixes are committed here"
            ),
            Key("logs", "list of paths", "[]", "log files to watch besides those the manager names"),
            Key("allowed_paths", "list of globs", "[]", "files a fix may touch, relative to the repo"),
            Key(
                "check_command",
                "argv list",
                "-",
                "run in the sandbox on a copy of the fixed tree before a fix is proposed",
            ),
            Key("check_timeout_s", num("services.*.check_timeout_s"), "300", "limit for check_command"),
            Key(
                "check_read_only_paths",
                "list of paths",
                "[]",
                "absolute host paths the sandboxed check may read (a toolchain outside /usr)",
            ),
            Key("manager", "table", "required", "how the service is restarted and its status read (below)"),
            Key("health", "table", "{}", "how health is judged before and after a change (below)"),
            Key("runbooks", "table", "{}", "NAME = argv list: the only commands a fix may run, by name"),
        ),
    ),
    Table(
        "services.NAME.manager",
        "type plus the manager's own options",
        (
            Key("type", "string", "required", "command, supervisord, pm2, systemd or docker"),
            Key(
                "(options)",
                "per type",
                "-",
                "command: restart, status, pidfile; supervisord: socket, program; pm2: app, pm2_home, binary; "
                "systemd: unit, user; docker: container; all: timeout_s",
            ),
        ),
    ),
    Table(
        "services.NAME.health",
        "the health verdict",
        (
            Key("http_url", "string", "-", "an http(s) URL that answers 2xx when healthy"),
            Key(
                "http_timeout_s", num("services.*.health.http_timeout_s"), "5", "limit for one health request"
            ),
            Key(
                "tcp_port",
                num("services.*.health.tcp_port"),
                "-",
                "a port that accepts connections when healthy",
            ),
            Key("tcp_host", "string", '"127.0.0.1"', "host of tcp_port"),
            Key("process", "boolean", "true", "the manager must report the process running"),
            Key(
                "window_s",
                num("services.*.health.window_s"),
                "30",
                "errors are counted this long before and after a change",
            ),
            Key(
                "settle_s",
                num("services.*.health.settle_s"),
                "3",
                "a restarted service must stay up this long",
            ),
        ),
    ),
)


def render() -> str:
    """The README block between the markers (markers included)."""
    lines = [START_MARK, "", "Generated by `python -m bot.config_reference`; do not edit by hand.", ""]
    for table in REFERENCE:
        lines += [
            f"**`[{table.name}]`**: {table.about}",
            "",
            "| key | type | default | meaning |",
            "|---|---|---|---|",
        ]
        for key in table.keys:
            meaning = key.meaning.replace("|", "\\|")
            lines.append(f"| `{key.name}` | {key.type} | `{key.default}` | {meaning} |")
        lines.append("")
    lines.append(END_MARK)
    return "\n".join(lines)


def readme_block(readme_text: str) -> str | None:
    start, end = readme_text.find(START_MARK), readme_text.find(END_MARK)
    if start < 0 or end < start:
        return None
    return readme_text[start : end + len(END_MARK)]


if __name__ == "__main__":
    print(render())
