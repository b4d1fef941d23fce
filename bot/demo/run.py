"""`healbot demo`: the whole loop on a bundled sample service, with no Telegram account or Claude login.

A tiny shop service with two planted bugs runs under the real supervisord, in its own git repo. Traffic
makes it log tracebacks; healbot detects them, opens incidents, diagnoses them through the real `claude`
binary (against the bundled fake Messages API, whose answers are scripted — said plainly on screen; with
`--live` your logged-in claude answers instead), shows the candidates and the exact diff, approves,
commits, restarts and verifies. Scenario 1's fix is kept; scenario 2's fix makes health worse and is
reverted automatically.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot import proc
from bot.config import load_config
from bot.console import ConsoleChannel
from bot.daemon import Daemon
from bot.demo.fake_messages_api import FakeMessagesApi, ToolCall
from bot.errors import HealbotError
from bot.pipeline import FlowResult
from bot.runner.claude_cli import ClaudeCliRunner

if TYPE_CHECKING:
    from bot.demo.telegram_demo import TelegramDemo

ASSETS = Path(__file__).parent / "assets"
SCENARIO_TIMEOUT_S = 40.0
REPO_ROOT = Path(__file__).resolve().parents[2]
CONSOLE_APPROVAL = """[approval]
channel = "console"
expiry_minutes = 60
"""

GOOD_FIX = {
    "title": "Reject unknown items instead of crashing in checkout_total",
    "rationale": "checkout_total indexes PRICES with an item name from the query string; an unknown item "
    "raises KeyError and the request fails with 500. Skipping names that have no price keeps the "
    "endpoint up.",
    "risk": "low",
    "kind": "patch",
    "edits": [
        {
            "path": "shop.py",
            "old": "        price = PRICES[name]\n",
            "new": "        price = PRICES.get(name)\n        if price is None:\n            continue\n",
        }
    ],
}
BAD_FIX = {
    "title": "Guard average_order against an empty order list",
    "rationale": "average_order divides by len(ORDERS), which is zero before the first order.",
    "risk": "low",
    "kind": "patch",
    "edits": [
        {
            "path": "shop.py",
            "old": "    return sum(ORDERS) // len(ORDERS)\n",
            "new": "    return sum(ORDERS) // max(len(ORDER), 1)\n",
        }
    ],
}
RESTART_FIX = {
    "title": "Restart the shop service",
    "rationale": "Restarting clears in-memory state; it does not fix the code path.",
    "risk": "low",
    "kind": "restart",
}


def telegram_answer(body: Mapping[str, Any]) -> object:
    from bot.demo.telegram_demo import scripted_answer as answer

    return answer(body)


# What the scripted model looks at through `healbot mcp` before it answers: the card then says so.
DEMO_LOOKS = (
    (
        ToolCall("mcp__healbot__incident", {}),
        ToolCall("mcp__healbot__log_window", {"pattern": "Error", "max_lines": 20}),
        ToolCall("mcp__healbot__health", {}),
        ToolCall("mcp__healbot__read_file", {"path": "shop.py"}),
    ),
)


def scripted_answer(body: Mapping[str, Any]) -> object:
    """The fake's answer, picked by the exception in the prompt (the demo's two planted bugs)."""
    text = json.dumps(body.get("messages", ""))
    if "ZeroDivisionError" in text:
        return {
            "summary": "average_order() divides by the number of orders, which is 0 until the first checkout.",
            "candidates": [BAD_FIX, RESTART_FIX],
        }
    return {
        "summary": "checkout_total() looks up prices with PRICES[name]; an unknown item raises KeyError.",
        "candidates": [GOOD_FIX, RESTART_FIX],
    }


@dataclass
class ScenarioReport:
    name: str
    verdict: str
    action: str
    commit: str | None
    revert_commit: str | None
    seconds: float


def find_claude(live: bool) -> str:
    candidates = [os.environ.get("HEALBOT_CLAUDE_BIN", ""), shutil.which("claude") or ""]
    if not live:
        candidates += [
            str(p) for p in sorted(REPO_ROOT.glob(".cache/claude-cli-*/claude_agent_sdk/_bundled/claude"))
        ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise HealbotError("the claude binary was not found: run `make demo` (it installs the pinned one)")


def find_supervisord() -> str:
    beside = Path(sys.executable).parent / "supervisord"
    found = str(beside) if beside.exists() else shutil.which("supervisord")
    if not found:
        raise HealbotError("supervisord was not found: run `make demo` (it installs the pinned supervisor)")
    return found


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0"}
    return _checked(proc.run(["git", "-C", str(repo), *args], timeout_s=60, env=env)).stdout_text.strip()


def _checked(result: proc.ProcResult) -> proc.ProcResult:
    if not result.ok:
        ended = "timed out" if result.timed_out else f"exited {result.returncode}"
        raise HealbotError(f"{' '.join(result.argv)} {ended}: {result.output.strip()[-500:]}")
    return result


class Traffic:
    """Requests against the shop in a thread, like its users would make."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.paths: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-traffic", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for path in list(self.paths):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2):
                        pass
                except (urllib.error.URLError, OSError):
                    pass


def _write_setup(
    work: Path, port: int, claude: str, live: bool, socket_dir: Path, approval: str = CONSOLE_APPROVAL
) -> Path:
    repo = work / "shop"
    repo.mkdir(parents=True)
    shutil.copy(ASSETS / "shop.py", repo / "shop.py")
    (repo / "README.md").write_text("# shop\n\nThe healbot demo's sample service.\n")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "demo@example.invalid")
    _git(repo, "config", "user.name", "Demo Operator")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "shop: first version")
    logs = work / "logs"
    logs.mkdir()
    socket_path = socket_dir / "supervisor.sock"  # unix socket paths are limited to ~100 bytes
    (work / "supervisord.conf").write_text(
        f"""[unix_http_server]
file={socket_path}
chmod=0700

[supervisord]
logfile={logs}/supervisord.log
pidfile={work}/supervisord.pid
childlogdir={logs}
nodaemon=false

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{socket_path}

[program:shop]
command={sys.executable} {repo}/shop.py
directory={repo}
environment=PORT="{port}",PYTHONUNBUFFERED="1"
autostart=true
autorestart=true
startsecs=1
startretries=3
stopsignal=TERM
stdout_logfile={logs}/shop.out.log
stderr_logfile={logs}/shop.err.log
"""
    )
    config = work / "healbot.toml"
    config.write_text(
        f"""# Written by `healbot demo`.
[healbot]
state_dir = "{work}/state"
poll_interval_s = 0.2
diagnose_every_s = 3600

[claude]
binary = "{claude}"
max_turns = {8 if live else 6}
max_budget_usd = {1.0 if live else 0.5}
timeout_s = {300 if live else 60}
idle_timeout_s = {120 if live else 30}

{approval}
# The demo restarts shop three times (two fixes and a revert): the restart breaker's default limit
# of 3 per 30 min would then escalate the next incident, which reads as an alarm at the end of a demo.
# Its second fault follows seconds after the first fix's restart: no start-up grace (the default is 60 s).
[policy]
max_restarts_per_service = 10
grace_after_restart_s = 0

[services.shop]
repo = "{repo}"
logs = ["{logs}/shop.err.log"]
allowed_paths = ["shop.py"]
check_command = ["{sys.executable}", "-m", "py_compile", "shop.py"]

[services.shop.manager]
type = "supervisord"
socket = "{socket_path}"
program = "shop"

[services.shop.health]
http_url = "http://127.0.0.1:{port}/health"
window_s = 2.5
settle_s = 1.0
"""
    )
    return config


def _start_supervisord(work: Path, port: int) -> int:
    supervisord = find_supervisord()
    # supervisord daemonizes (nodaemon=false): this command returns once the daemon, in a session of
    # its own, is up; the daemon is stopped by its pid in _stop_supervisord
    _checked(proc.run([supervisord, "-c", str(work / "supervisord.conf")], timeout_s=30))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                break
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    else:
        raise HealbotError("the sample service did not come up under supervisord within 20 s")
    return int((work / "supervisord.pid").read_text().strip())


def _stop_supervisord(pid: int) -> None:
    import signal

    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


async def _scenario(daemon: Daemon, traffic: Traffic, name: str, path: str, done: int) -> ScenarioReport:
    print(f"\n=== scenario: {name} ===\ntraffic: GET {path}")
    started = time.monotonic()
    traffic.paths = [path]
    deadline = started + SCENARIO_TIMEOUT_S
    while len(daemon.pipeline.results) <= done:
        if time.monotonic() > deadline:
            raise HealbotError(f"scenario {name!r} did not finish within {SCENARIO_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.1)
    traffic.paths = []
    await daemon.pipeline.wait_idle()
    result: FlowResult = daemon.pipeline.results[done]
    change = result.change
    return ScenarioReport(
        name=name,
        verdict=result.verdict.value if result.verdict else "none",
        action=result.action,
        commit=change.commit if change else None,
        revert_commit=change.revert_commit if change else None,
        seconds=round(time.monotonic() - started, 1),
    )


def _rows(reports: list[ScenarioReport]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [("scenario", "verdict", "action", "commit", "revert commit", "seconds")]
    for r in reports:
        rows.append(
            (
                r.name,
                r.verdict,
                r.action,
                (r.commit or "-")[:10],
                (r.revert_commit or "-")[:10],
                f"{r.seconds:.1f}",
            )
        )
    return rows


def _table(reports: list[ScenarioReport]) -> str:
    rows = _rows(reports)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


async def _run(
    work: Path, *, yes: bool, live: bool, telegram: TelegramDemo | None = None
) -> list[ScenarioReport]:
    claude = find_claude(live)
    port = _free_port()
    socket_dir = Path(tempfile.mkdtemp(prefix="hb-"))
    if telegram is not None:
        telegram.start()
    approval = telegram.approval_toml() if telegram is not None else CONSOLE_APPROVAL
    config_path = _write_setup(work, port, claude, live, socket_dir, approval)
    try:
        supervisord_pid = _start_supervisord(work, port)
    except BaseException:
        shutil.rmtree(socket_dir, ignore_errors=True)
        raise
    fake: FakeMessagesApi | None = None
    traffic = Traffic(port)
    daemon: Daemon | None = None
    try:
        extra_env: dict[str, str] = {}
        if live:
            print("claude: your own logged-in claude answers (--live); the second scenario is skipped")
        else:
            fake = FakeMessagesApi(
                structured=telegram_answer if telegram else scripted_answer,
                default_scenario="script",
                tool_script=DEMO_LOOKS,
            ).start()
            extra_env = {
                "ANTHROPIC_BASE_URL": fake.url,
                "ANTHROPIC_API_KEY": "demo-not-a-real-key",
                "CLAUDE_CODE_MAX_RETRIES": "0",
            }
            print(
                "claude: the real claude binary runs, but it talks to healbot's bundled FAKE Messages API on "
                f"{fake.url}: its answers are scripted, no Claude account is used (use --live for real answers)"
            )
        if telegram is None:
            print(
                "skipped: Telegram (the console is the approval channel here; try `healbot demo --telegram`)"
            )
        config = load_config(config_path)
        runner = ClaudeCliRunner(config.claude, extra_env=extra_env, config_dir=work / "claude-config")
        if telegram is not None:
            daemon = telegram.build_daemon(config, runner)
        else:
            channel = ConsoleChannel(auto_approve=yes, interactive=not yes and sys.stdin.isatty())
            daemon = Daemon(config, channel, runner=runner)
        await daemon.start()
        if telegram is not None:
            telegram.start_operator()
        traffic.start()
        reports = [
            await _scenario(daemon, traffic, "unknown item crashes checkout", "/checkout?items=apple,pear", 0)
        ]
        if not live:
            reports.append(await _scenario(daemon, traffic, "a bad fix is reverted", "/stats", 1))
        if telegram is not None:
            await telegram.settle(daemon.pipeline.results)
        return reports
    finally:
        traffic.stop()
        if telegram is not None:
            await telegram.stop_operator()
        if daemon is not None:
            await daemon.stop()
            daemon.store.close()
        if fake is not None:
            fake.stop()
        if telegram is not None:
            telegram.stop()
        _stop_supervisord(supervisord_pid)
        shutil.rmtree(socket_dir, ignore_errors=True)


def run_demo(
    *,
    yes: bool,
    live: bool,
    summary_json: Path | None,
    workdir: Path | None,
    telegram: bool = False,
    html: Path | None = None,
) -> int:
    if html is not None and not telegram:
        raise HealbotError("--html writes the Telegram chat transcript: use it with --telegram")
    started = time.monotonic()
    chat: TelegramDemo | None = None
    if telegram:
        from bot.demo.telegram_demo import TelegramDemo

        chat = TelegramDemo()
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="healbot-demo-", dir=workdir))
    else:
        work = Path(tempfile.mkdtemp(prefix="healbot-demo-"))
    print(f"healbot demo in {work}")
    try:
        reports = asyncio.run(_run(work, yes=yes, live=live, telegram=chat))
    finally:
        if workdir is None:
            shutil.rmtree(work, ignore_errors=True)
        if chat is not None:
            chat.stop()
    if chat is not None:
        chat.print_transcript()
        if html is not None:
            chat.write_html(html, _rows(reports))
    print("\n" + _table(reports))
    print(f"\ntotal {time.monotonic() - started:.1f} s")
    if summary_json is not None:
        summary = {
            "scenarios": [
                {
                    "name": r.name,
                    "verdict": r.verdict,
                    "action": r.action,
                    "commit": r.commit,
                    "revert_commit": r.revert_commit,
                    "seconds": r.seconds,
                }
                for r in reports
            ]
        }
        summary_json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0
