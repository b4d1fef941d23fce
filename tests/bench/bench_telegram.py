"""Card latency through the real stack: python-telegram-bot + the fake Bot API + the real claude binary +
the fake Messages API + the real daemon and pipeline.

- incident → card: from the error lines appended to the log until the card's sendMessage is in the fake's
  journal (tail, grouping, evidence, one `claude -p`, the scratch-worktree diff, the outbox, PTB).
- approve → outcome: from the button press until the card is edited with "kept" (PTB's long poll, the
  decision, commit, restart, the health window of WINDOW_S, the edit).

Same-run references: one bare `claude -p` (the runner's exact argv and env, no healbot around it) against
the same fake, and the bare fake Bot API round trip (PTB `send_message`). Each repetition uses a fresh
world (repo, daemon, servers), because a kept fix changes the code the next incident would need.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from telegram import Bot

from bot.config import load_config
from bot.demo.fake_bot_api import TOKEN, Call, FakeBotApi
from bot.demo.fake_messages_api import FakeMessagesApi
from bot.diagnose import load_schema
from bot.models import RunRequest
from bot.runner.claude_cli import ClaudeCliRunner
from tests.conftest import claude_binary
from tests.fakes.telegram_world import (
    ANSWER,
    APP,
    APPROVER,
    CHAT,
    ShiftedClock,
    TelegramWorld,
    config_text,
    traceback_lines,
)
from tests.helpers import make_repo, until

REPETITIONS = 5
ROUND_TRIPS = 50
WINDOW_S = 0.5
STEP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
REPETITION_TIMEOUT_S = 2 * STEP_TIMEOUT_S + STOP_TIMEOUT_S + 30.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def _journalled(api: FakeBotApi, method: str, contains: str, message_id: int | None = None) -> Call | None:
    """The first successful `method` call in CHAT whose resulting message holds `contains`."""
    for call in api.calls(method, chat_id=CHAT, ok=True):
        result = call.result if isinstance(call.result, dict) else {}
        if message_id is not None and result.get("message_id") != message_id:
            continue
        if contains in str(result.get("text", "")):
            return call
    return None


async def _in_journal(api: FakeBotApi, method: str, contains: str, message_id: int | None = None) -> Call:
    what = f"a {method} with {contains!r} in the fake Bot API's journal"
    call = await until(lambda: _journalled(api, method, contains, message_id), STEP_TIMEOUT_S, what)
    assert call is not None
    return call


def _world(tmp: Path) -> TelegramWorld:
    repo = make_repo(tmp / "svc", {"app.py": APP})
    log = tmp / "svc.log"
    log.write_text("starting\n")
    bot_api = FakeBotApi().start()
    messages_api = FakeMessagesApi(structured=ANSWER).start()
    cfg_path = tmp / "healbot.toml"
    cfg_path.write_text(config_text(tmp, repo, log, bot_api.base_url, WINDOW_S))
    config = load_config(cfg_path)
    runner = ClaudeCliRunner(
        config.claude,
        extra_env={
            "ANTHROPIC_BASE_URL": messages_api.url,
            "ANTHROPIC_API_KEY": "bench",
            "CLAUDE_CODE_MAX_RETRIES": "0",
            "API_TIMEOUT_MS": "5000",
        },
        config_dir=tmp / "claude",
    )
    return TelegramWorld(tmp, repo, log, config, bot_api, messages_api, runner, ShiftedClock())


async def _one_card(tmp: Path) -> tuple[float, float]:
    """(incident → card, approve → outcome) in seconds, for one fresh world."""
    world = _world(tmp)
    try:
        await world.start_daemon()
        await world.connected()
        appended = time.time()
        world.append(traceback_lines(world.repo))
        # Waited on in the journal itself: the fake stores a message before it journals the call, so a
        # stored card may not be journalled yet (the bench read the journal too early under load).
        sent = await _in_journal(world.bot_api, "sendMessage", "fingerprint")
        card_id = int(sent.result["message_id"])
        pressed = time.time()
        world.bot_api.press(APPROVER, CHAT, card_id, text="Approve #1")
        edited = await _in_journal(world.bot_api, "editMessageText", "kept", card_id)
        return sent.at - appended, edited.at - pressed
    finally:
        try:
            await asyncio.wait_for(world.stop_daemon(), STOP_TIMEOUT_S)
        finally:
            world.bot_api.stop()
            world.messages_api.stop()


def _bare_claude(tmp: Path) -> float:
    """One `claude -p` with the runner's own argv and environment, against the same kind of fake."""
    world = _world(tmp)
    try:
        binary = world.runner.resolve_binary()
        assert binary is not None, "claude binary missing: run `make tools`"
        request = RunRequest(prompt=traceback_lines(world.repo), schema=load_schema(), cwd=str(world.repo))
        started = time.perf_counter()
        process = subprocess.Popen(
            world.runner.build_argv(binary, request),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=world.repo,
            env=world.runner.build_env(),
            start_new_session=True,
            text=True,
        )
        try:
            out, err = process.communicate(request.prompt, timeout=STEP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
        elapsed = time.perf_counter() - started
        assert process.returncode == 0 and '"structured_output"' in out, (process.returncode, err[-500:])
        return elapsed
    finally:
        world.bot_api.stop()
        world.messages_api.stop()


async def _bot_api_round_trips() -> list[float]:
    with FakeBotApi() as api:
        async with Bot(TOKEN, base_url=api.base_url, base_file_url=api.base_file_url) as bot:
            times = []
            for i in range(ROUND_TRIPS):
                started = time.perf_counter()
                await bot.send_message(CHAT, f"ping {i}")
                times.append(time.perf_counter() - started)
            return times


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:7.0f} ms"


def run(repetitions: int = REPETITIONS) -> bool:
    """Print the figures, or one line saying what failed (the benchmarks after this one still run); False
    when it failed."""
    print(
        f"telegram card latency (real PTB + fake Bot API + real claude + fake Messages API; n={repetitions})"
    )
    if claude_binary() is None:
        print("  FAILED: claude binary missing: run `make tools`")
        return False
    try:
        _measure(repetitions)
    except (AssertionError, TimeoutError, OSError, subprocess.SubprocessError) as exc:
        print(f"  FAILED: {type(exc).__name__}: {exc}")
        return False
    return True


async def _bounded_card(tmp: Path) -> tuple[float, float]:
    return await asyncio.wait_for(_one_card(tmp), REPETITION_TIMEOUT_S)


def _measure(repetitions: int) -> None:
    to_card: list[float] = []
    to_outcome: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-telegram-") as tmp:
        for i in range(repetitions):
            card_s, outcome_s = asyncio.run(_bounded_card(Path(tmp) / f"rep{i}"))
            to_card.append(card_s)
            to_outcome.append(outcome_s)
        bare = [_bare_claude(Path(tmp) / f"bare{i}") for i in range(3)]
    trips = asyncio.run(asyncio.wait_for(_bot_api_round_trips(), STEP_TIMEOUT_S))
    print(f"  incident → card     p50 {_ms(percentile(to_card, 50))}   p95 {_ms(percentile(to_card, 95))}")
    print(
        f"  approve → outcome   p50 {_ms(percentile(to_outcome, 50))}   p95 {_ms(percentile(to_outcome, 95))}"
        f"   (includes the {WINDOW_S:.1f} s health window)"
    )
    print(f"  reference: bare `claude -p` against the same fake   median {_ms(statistics.median(bare))}")
    print(
        f"  reference: fake Bot API round trip (PTB send_message, n={ROUND_TRIPS})   "
        f"p50 {_ms(percentile(trips, 50))}   p95 {_ms(percentile(trips, 95))}"
    )
    overhead = percentile(to_card, 50) - statistics.median(bare)
    print(f"  incident → card minus bare claude (healbot's own share, p50)   {_ms(overhead)}")


if __name__ == "__main__":
    run()
