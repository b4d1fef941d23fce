"""What the pipeline-level worlds share: a tiny service with a planted KeyError, its fix, its traceback; the
healbot.toml written for it; the claude runner pointed at the fake Messages API; and the console-channel
world of the pipeline tests (`make_world`)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.config import HealbotConfig, load_config
from bot.console import ConsoleChannel
from bot.daemon import Daemon
from bot.demo.fake_messages_api import FakeMessagesApi
from bot.models import Decision, DecisionAction, Incident, Proposal
from bot.pipeline import Pipeline
from bot.runner.claude_cli import ClaudeCliRunner
from bot.store import Store
from tests.conftest import claude_binary
from tests.fakes.daemon_proc import FAKE_CLAUDE_ENV
from tests.helpers import make_repo

APP = """PRICES = {"apple": 120}


def total(name):
    return PRICES[name]
"""

FIX = {
    "title": "Unknown items cost nothing",
    "rationale": "PRICES[name] raises KeyError for unknown items.",
    "risk": "low",
    "kind": "patch",
    "edits": [
        {"path": "app.py", "old": "    return PRICES[name]\n", "new": "    return PRICES.get(name, 0)\n"}
    ],
}
RESTART = {"title": "Restart", "rationale": "Clears state.", "risk": "low", "kind": "restart"}
FIX_ONLY = {"summary": "unknown items raise KeyError", "candidates": [FIX]}


def traceback_lines(repo: Path, exc: str = "KeyError: 'pear'", func: str = "total") -> str:
    return (
        "2026-11-26 06:00:00,000 ERROR svc[42]: request /total failed\n"
        "Traceback (most recent call last):\n"
        f'  File "{repo}/app.py", line 5, in {func}\n'
        "    return PRICES[name]\n"
        f"{exc}\n"
        '127.0.0.1 - - [26/Nov/2026 06:00:00] "GET /health HTTP/1.1" 200 -\n'
    )


class ManualClock:
    """Time moves only when a test sets `t`."""

    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t


class ShiftedClock:
    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic() + self.offset


# --- healbot.toml -----------------------------------------------------------------------------------------

TomlValue = str | int | float | bool | Path | Sequence["TomlValue"]
TomlTable = Mapping[str, TomlValue]


def toml_value(value: TomlValue) -> str:
    """A TOML value; JSON's strings, numbers, booleans and arrays are TOML too."""
    if isinstance(value, Path):
        return json.dumps(str(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


def toml_table(name: str, values: TomlTable) -> str:
    return "".join([f"\n[{name}]\n", *(f"{key} = {toml_value(v)}\n" for key, v in values.items())])


def healbot_toml(
    state_dir: Path,
    repo: Path,
    logs: Sequence[Path],
    *,
    service: str = "svc",
    healbot: TomlTable | None = None,
    claude: TomlTable | None = None,
    tables: Mapping[str, TomlTable] | None = None,
    restart: Sequence[str] = ("true",),
    health: TomlTable | None = None,
) -> str:
    """One service restarted by the `command` manager; `tables` are top-level ones such as approval, policy."""
    parts = [toml_table("healbot", {"state_dir": state_dir, **(healbot or {})})]
    if claude is not None:
        parts.append(toml_table("claude", claude))
    parts.extend(toml_table(name, values) for name, values in (tables or {}).items())
    parts.append(toml_table(f"services.{service}", {"repo": repo, "logs": list(logs)}))
    parts.append(toml_table(f"services.{service}.manager", {"type": "command", "restart": list(restart)}))
    if health is not None:
        parts.append(toml_table(f"services.{service}.health", health))
    return "".join(parts)


def claude_via_fake_api(url: str) -> dict[str, TomlValue]:
    """[claude] for a `healbot` subprocess: the real binary, the fake API, the env of FAKE_CLAUDE_ENV."""
    binary = claude_binary() or pytest.fail("claude binary missing: run `make tools`")
    return {"binary": binary, "base_url": url, "pass_env": sorted(FAKE_CLAUDE_ENV)}


def in_process_claude(**options: TomlValue) -> dict[str, TomlValue]:
    """[claude] for a daemon built in the test process (its runner gets the fake API's env directly)."""
    return {"binary": claude_binary() or "", "max_turns": 3, "timeout_s": 60, **options}


@dataclass(frozen=True, slots=True)
class ScratchService:
    """A service in a scratch dir: its git repo and log; healbot's config and state live beside them."""

    root: Path
    repo: Path
    log: Path
    name: str = "svc"

    @property
    def config_path(self) -> Path:
        return self.root / "healbot.toml"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "healbot.db"

    def write_config(self, **options: Any) -> Path:
        """healbot.toml for this service (options as `healbot_toml` takes them)."""
        text = healbot_toml(self.state_dir, self.repo, [self.log], service=self.name, **options)
        self.config_path.write_text(text)
        return self.config_path

    def append(self, text: str) -> None:
        with self.log.open("a") as handle:
            handle.write(text)


def scratch_service(
    root: Path,
    *,
    name: str = "svc",
    files: Mapping[str, str] | None = None,
    log_text: str | None = "starting\n",
    repo_dir: str | None = None,
) -> ScratchService:
    """The repo at root/<repo_dir or name> (APP as app.py unless `files`), the log root/<name>.log holding
    `log_text` (not created when None)."""
    repo = make_repo(root / (repo_dir or name), dict(files) if files is not None else {"app.py": APP})
    log = root / f"{name}.log"
    if log_text is not None:
        log.write_text(log_text)
    return ScratchService(root, repo, log, name)


def fake_api_runner(
    config: HealbotConfig, api_url: str, config_dir: Path, *, api_timeout_ms: str | None = "5000"
) -> ClaudeCliRunner:
    """The real claude binary, as the daemon runs it in-process, against the fake Messages API."""
    env = {"ANTHROPIC_BASE_URL": api_url, **FAKE_CLAUDE_ENV}
    if api_timeout_ms is not None:
        env["API_TIMEOUT_MS"] = api_timeout_ms
    return ClaudeCliRunner(config.claude, extra_env=env, config_dir=config_dir)


# --- the pipeline world: the console channel, a fake Messages API, the real everything else --------------

DEFAULT_ANSWER = {"summary": "KeyError", "candidates": [FIX, RESTART]}


@dataclass
class World:
    repo: Path
    log: Path
    daemon: Daemon
    fake: FakeMessagesApi
    out: io.StringIO
    clock: ShiftedClock
    config: HealbotConfig
    runner: ClaudeCliRunner

    @property
    def pipeline(self) -> Pipeline:
        return self.daemon.pipeline

    @property
    def store(self) -> Store:
        return self.daemon.store

    def append(self, text: str) -> None:
        with self.log.open("a") as handle:
            handle.write(text)

    async def settle(self, text: str) -> None:
        """Log `text`, read it, flush the pending record with a quiet poll, and wait for what it started."""
        self.append(text)
        await self.pipeline.poll_once()
        await self.pipeline.poll_once()  # a quiet poll flushes the pending record
        await self.pipeline.wait_idle()

    async def incident_with_proposal(self) -> tuple[Incident, Proposal]:
        await self.settle(traceback_lines(self.repo))
        [incident] = self.store.incidents()
        proposal = self.store.latest_proposal(incident.id)
        assert proposal is not None, self.out.getvalue()
        return self.store.incident(incident.id), proposal

    async def approve(self, proposal: Proposal, rank: int = 1, actor: str = "alice") -> str:
        result = await self.pipeline.decide(
            Decision(
                proposal.token, actor, DecisionAction.APPROVE, rank, proposal.candidates[rank - 1].digest
            )
        )
        return result.message


async def console_daemon(
    config: HealbotConfig, runner: ClaudeCliRunner, out: io.StringIO, clock: ShiftedClock
) -> Daemon:
    """A daemon as the pipeline tests drive it: the console channel started, no scheduler, no first poll."""
    daemon = Daemon(config, ConsoleChannel(out=out, interactive=False), runner=runner, clock=clock)
    await daemon.channel.start(daemon.pipeline.decide)
    return daemon


def pipeline_config(
    service: ScratchService, restart: Sequence[str] = ("true",), idle_timeout_s: float = 20
) -> HealbotConfig:
    return load_config(
        service.write_config(
            healbot={"poll_interval_s": 0.1},
            claude=in_process_claude(idle_timeout_s=idle_timeout_s),
            restart=restart,
            health={"process": False, "window_s": 2.5, "settle_s": 0.1},
        )
    )


async def start_world(
    root: Path,
    answer: object | Callable[[Mapping[str, Any]], object] = None,
    *,
    restart: Sequence[str] = ("true",),
    idle_timeout_s: float = 20,
    api_timeout_ms: str = "5000",
) -> World:
    """The pipeline world in `root`, its first poll done (the cursor at the end of the log)."""
    if claude_binary() is None:
        pytest.fail("claude binary missing: run `make tools`")
    service = scratch_service(root)
    config = pipeline_config(service, restart, idle_timeout_s)
    fake = FakeMessagesApi(structured=answer if answer is not None else DEFAULT_ANSWER).start()
    runner = fake_api_runner(config, fake.url, root / "claude", api_timeout_ms=api_timeout_ms)
    out, clock = io.StringIO(), ShiftedClock()
    daemon = await console_daemon(config, runner, out, clock)
    await daemon.pipeline.poll_once()  # first run: cursor at the end
    return World(service.repo, service.log, daemon, fake, out, clock, config, runner)


@pytest.fixture
def make_world(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """`await make_world(answer=..., restart='["false"]')`: a World in tmp_path, closed in teardown."""
    worlds: list[World] = []

    async def make(
        answer: object | Callable[[Mapping[str, Any]], object] = None,
        restart: str | Sequence[str] = '["true"]',
    ) -> World:
        argv = json.loads(restart) if isinstance(restart, str) else restart
        world = await start_world(tmp_path, answer, restart=argv)
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        world.fake.stop()
        world.store.close()
