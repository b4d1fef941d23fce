"""No secret leaves: more than 15 kinds of secrets seeded in the service's log and in the code around the
failing frame never reach the fake Messages API (what Claude is sent) nor the fake Bot API (what Telegram is
sent), through the whole loop: detection, diagnosis by the real claude binary, the card, the approval, the
progress lines. The card says how many values were redacted. The claude subprocess gets none of the bot's
environment but the variables listed."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from bot.config import ClaudeConfig, load_config
from bot.demo.fake_messages_api import FakeMessagesApi
from bot.errors import RunnerError
from bot.models import RunRequest
from bot.runner.claude_cli import ClaudeCliRunner
from tests.conftest import claude_binary
from tests.fakes.fake_bot_api import FakeBotApi
from tests.fakes.telegram_world import CHAT, ShiftedClock, TelegramWorld, config_text, until
from tests.fakes.world import FIX, fake_api_runner, scratch_service
from tests.helpers import git
from tests.secret_corpus import CONTEXTS, SAMPLES, SecretSample
from tests.secret_corpus import leaks as corpus_leaks

PRIVATE_KEY_BODY = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0"

# kind → (the secret value that must never leave, the log text that carries it)
LOG_SECRETS: dict[str, tuple[str, str]] = {
    "aws_access_key": ("AKIAIOSFODNN7QWERTYZ", "aws key AKIAIOSFODNN7QWERTYZ rejected"),
    "aws_secret_key": (
        "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",
        "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQWERTYKEY",
    ),
    "github_token": (
        "ghp_R4nd0mT0k3nV4lu3F0rT3st1ngXyZ0123456",
        "git push with ghp_R4nd0mT0k3nV4lu3F0rT3st1ngXyZ0123456 denied",
    ),
    "gitlab_token": ("glpat-Xy7Qw3Er5Ty8Ui0Op2As", "gitlab said 401 for glpat-Xy7Qw3Er5Ty8Ui0Op2As"),
    "slack_token": ("xoxb-2048-4096-Zq9Wx8Ec7Rv6", "slack post failed token xoxb-2048-4096-Zq9Wx8Ec7Rv6"),
    "slack_webhook": (
        "T0000/B0000/XXXXXXXXXXXXXXXX1234",
        "webhook https://hooks.slack.com/services/T0000/B0000/XXXXXXXXXXXXXXXX1234 timed out",
    ),
    "telegram_token": (
        "7212345678:AAHk2Vx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0",
        "sendMessage to bot7212345678:AAHk2Vx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0 failed",
    ),
    "jwt": (
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJlX3NlY3JldF92YWx1ZQ",
        "session eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJlX3NlY3JldF92YWx1ZQ expired",
    ),
    "private_key": (
        PRIVATE_KEY_BODY,
        f"loaded -----BEGIN RSA PRIVATE KEY-----\n    {PRIVATE_KEY_BODY}\n    -----END RSA PRIVATE KEY-----",
    ),
    "url_password": ("Tr0ub4dor3xyz", "fetch https://deploy:Tr0ub4dor3xyz@git.example.com/repo failed"),
    "password_pair": ("CorrectHorse42", "login failed password=CorrectHorse42"),
    "secret_pair": ("s3kr1t-v4lue-77", "config secret: s3kr1t-v4lue-77"),
    "authorization": (
        "ZGVwbG95Omh1bnRlcjJodW50ZXI=",
        "upstream Authorization: Basic ZGVwbG95Omh1bnRlcjJodW50ZXI=",
    ),
    "bearer": ("abcdef0123456789xyzTOKENqq", "retrying with Bearer abcdef0123456789xyzTOKENqq"),
    "cookie": ("9f8e7d6c5b4a3f2e1d0cSID", "request had Cookie: sessionid=9f8e7d6c5b4a3f2e1d0cSID"),
    "connection_string": ("PgPassw0rd99", "db postgresql://shop:PgPassw0rd99@db:5432/shop refused"),
    "odbc_password": ("Pa55w0rdConn", "Server=db;Database=x;User Id=sa;Password=Pa55w0rdConn;"),
    "stripe_key": ("sk_live_51HqLyjWDarjtT1zdp7dc", "charge failed with sk_live_51HqLyjWDarjtT1zdp7dc"),
    "google_api_key": (
        "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW",
        "maps key AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW over quota",
    ),
    "anthropic_key": ("sk-ant-api03-Qw3Er5Ty7Ui9", "claude call with sk-ant-api03-Qw3Er5Ty7Ui9 failed"),
    "high_entropy": ("Zx8Qm2Lp9Rt4Vw7Ny3Kb6Hd1Jf5Gs0Ac", "upload_sig=Zx8Qm2Lp9Rt4Vw7Ny3Kb6Hd1Jf5Gs0Ac"),
    "env_value": ("plain-but-secret-value-91", "connected as plain-but-secret-value-91"),
}
# Secrets in the code around the failing frame: they reach the prompt as code context and the card as diff
# context unless redacted.
CODE_SECRETS = {
    "code_db_url": ("CodePassw0rd77", '    db_url = "postgresql://app:CodePassw0rd77@db:5432/shop"\n'),
    "code_stripe": ("sk_live_CodeKey0123456789abcd", '    stripe_key = "sk_live_CodeKey0123456789abcd"\n'),
    "code_password": ("CodeHunter2Pass", '    smtp_password = "CodeHunter2Pass"\n'),
}
APP = (
    'PRICES = {"apple": 120}\n\n\ndef total(name):\n'
    + "".join(line for _, line in CODE_SECRETS.values())
    + "    return PRICES[name]\n"
)
FAILING_LINE = APP.splitlines().index("    return PRICES[name]") + 1


def secret_record(repo: Path) -> str:
    carried = "\n".join(f"    {text}" for _, text in LOG_SECRETS.values())
    return (
        "2026-11-26 06:00:00,000 ERROR svc[42]: request /total failed\n"
        "Traceback (most recent call last):\n"
        f'  File "{repo}/app.py", line {FAILING_LINE}, in total\n'
        "    return PRICES[name]\n"
        f"{carried}\n"
        "KeyError: 'pear'\n"
        '127.0.0.1 - - [26/Nov/2026 06:00:00] "GET /health HTTP/1.1" 200 -\n'
    )


def everything_sent(world: TelegramWorld) -> tuple[str, str]:
    to_claude = "\n".join(entry.text() for entry in world.messages_api.journal())
    to_telegram = "\n".join(
        json.dumps(dict(call.params), ensure_ascii=False, default=str)
        + "".join(blob.decode("utf-8", "replace") for blob in call.files.values())
        for call in world.bot_api.journal()
    )
    return to_claude, to_telegram


def test_the_catalogue_covers_at_least_fifteen_kinds() -> None:
    assert len(LOG_SECRETS) + len(CODE_SECRETS) >= 15
    assert len({value for value, _ in [*LOG_SECRETS.values(), *CODE_SECRETS.values()]}) == len(
        LOG_SECRETS
    ) + len(CODE_SECRETS)


async def test_no_seeded_secret_reaches_claude_or_telegram_and_the_card_counts_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if claude_binary() is None:
        pytest.fail("claude binary missing: run `make tools`")
    monkeypatch.setenv("SHOP_DB_PASSWORD", LOG_SECRETS["env_value"][0])
    service = scratch_service(tmp_path, files={"app.py": APP})
    repo, log = service.repo, service.log
    bot_api = FakeBotApi().start()
    messages_api = FakeMessagesApi(structured={"summary": "KeyError in total()", "candidates": [FIX]}).start()
    world: TelegramWorld | None = None
    try:
        cfg_path = tmp_path / "healbot.toml"
        cfg_path.write_text(config_text(tmp_path, repo, log, bot_api.base_url, 0.5))
        config = load_config(cfg_path)
        runner = fake_api_runner(config, messages_api.url, tmp_path / "claude")
        world = TelegramWorld(tmp_path, repo, log, config, bot_api, messages_api, runner, ShiftedClock())
        await world.start_daemon()
        await world.connected()
        world.append(secret_record(repo))
        card = await world.card()
        assert len(messages_api.message_requests()) == 1
        bot_api.press(111, CHAT, card.message_id, text="Approve #1")
        await until(lambda: world.pipeline.results, 30, "the fix to be applied and verified")
        await world.card_shows(card.message_id, "kept")

        to_claude, to_telegram = everything_sent(world)
        assert "PRICES" in to_claude and "request /total failed" in to_claude  # the evidence did arrive
        assert "PRICES.get(name, 0)" in to_telegram  # the diff did arrive
        assert "smtp_password" in to_claude and "smtp_password" in to_telegram  # with the code around it
        leaked = {
            kind: value
            for kind, (value, _) in [*LOG_SECRETS.items(), *CODE_SECRETS.items()]
            if value in to_claude or value in to_telegram
        }
        assert leaked == {}
        assert "[REDACTED:" in to_claude and "[REDACTED:" in to_telegram

        shown = bot_api.message(CHAT, card.message_id).text
        count = int(shown.split(" secret value(s) redacted")[0].rsplit("· ", 1)[1])
        assert count >= len(LOG_SECRETS), shown
    finally:
        if world is not None:
            await world.stop_daemon()
        bot_api.stop()
        messages_api.stop()


async def test_claude_gets_no_variable_of_the_bots_environment_but_those_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real subprocess in claude's place writes down the environment it was given."""
    dump = tmp_path / "env.txt"
    stub = tmp_path / "claude"
    stub.write_text(f"#!/bin/sh\nenv > {dump}\nexit 3\n")
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    bot_secrets = {
        "HEALBOT_TELEGRAM_TOKEN": "7212345678:AAHk2Vx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQWERTYKEY",
        "DATABASE_URL": "postgresql://shop:PgPassw0rd99@db/shop",
        "GITHUB_TOKEN": "ghp_R4nd0mT0k3nV4lu3F0rT3st1ngXyZ0123456",
        "SHOP_DB_PASSWORD": "plain-but-secret-value-91",
    }
    for name, value in bot_secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    runner = ClaudeCliRunner(ClaudeConfig(binary=str(stub), pass_env=("HTTPS_PROXY",)), config_dir=tmp_path)
    with pytest.raises(RunnerError):
        await runner.run(RunRequest(prompt="p", schema="{}", cwd=str(tmp_path)))
    given = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    assert not set(bot_secrets) & set(given)
    assert not [value for value in bot_secrets.values() if value in dump.read_text()]
    assert given["HTTPS_PROXY"] == "http://127.0.0.1:3128"
    inherited = {name for name in given if name in os.environ and os.environ[name] == given[name]}
    allowed = {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "HTTPS_PROXY", "PWD", "SHLVL", "_", "OLDPWD"}
    assert inherited <= allowed, inherited - allowed


# --- the whole corpus (tests/secret_corpus.py), every output checked ------------------------------------

CORPUS_ENV_VALUE = "envQz7Lm2Xp9Rt4Vw8Kd"


def _corpus_app() -> str:
    literals = [f"    {CONTEXTS['code_string'](sample).strip()}\n" for sample in SAMPLES[::3]]
    pem_body = [
        f"{s.secret.rstrip('=')[:40]}{s.secret[:24]}" for s in SAMPLES if s.kind == "base64_token"
    ] * 8
    pem = (
        "KEY = '''-----BEGIN RSA PRIVATE KEY-----\n"
        + "\n".join(pem_body)
        + "\n-----END RSA PRIVATE KEY-----'''\n"
    )
    return (
        'PRICES = {"apple": 120}\n'
        + pem
        + "\n\ndef total(name):\n"
        + "".join(literals)
        + "    return PRICES[name]\n"
    )


def _corpus_record(repo: Path, app: str) -> str:
    failing = app.splitlines().index("    return PRICES[name]") + 1
    writers = list(CONTEXTS.values())
    carried = [f"    {CONTEXTS['log_line'](s)}" for s in SAMPLES]
    carried += [f"    {writers[i % len(writers)](s)}" for i, s in enumerate(SAMPLES)]
    carried.append(f"    connected as {CORPUS_ENV_VALUE}")
    return (
        "2026-11-26 06:00:00,000 ERROR svc[42]: request /total failed with "
        + SAMPLES[0].text
        + "\nTraceback (most recent call last):\n"
        + f'  File "{repo}/app.py", line {failing}, in total\n'
        + "    return PRICES[name]\n"
        + "\n".join(carried)
        + f"\nKeyError: 'pear {SAMPLES[1].text}'\n"
    )


def _seed_history(repo: Path) -> None:
    (repo / ".env").write_text("".join(f"SECRET_{i}={s.secret}\n" for i, s in enumerate(SAMPLES)))
    git(repo, "add", ".env")
    for sample in SAMPLES[::4]:
        git(
            repo,
            *("-c", f"user.name=Ops {sample.kind}", "-c", "user.email=ops-corpus@corp.example"),
            *("commit", "-q", "--allow-empty", "-m", CONTEXTS["commit_subject"](sample)),
        )


def _echoing_answer() -> dict[str, object]:
    """An answer that repeats secrets (as a model that read `.env` with its own Read tool might)."""
    fix = dict(FIX)
    fix["title"] = f"Unknown items cost nothing (not {SAMPLES[2].text})"
    fix["rationale"] = "PRICES[name] raises KeyError; the log also shows " + ", ".join(
        s.text for s in SAMPLES[::5]
    )
    return {"summary": f"KeyError in total() near {SAMPLES[3].text}", "candidates": [fix]}


@pytest.mark.parametrize("runner_kind", ["claude-cli", "messages-api"])
async def test_no_corpus_secret_leaves_through_any_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], runner_kind: str
) -> None:
    """Every kind seeded into the log, the code, `.env`, commit subjects and the author identity; the real
    pipeline end to end with the real claude CLI or the anthropic SDK against the fake Messages API and the
    real python-telegram-bot against the fake Bot API; then every request both fakes recorded, the INFO
    log, the CLI's printouts and the audit export hold no 8-character piece of any seeded value."""
    import io
    import logging

    from bot.cli import main
    from bot.logging_setup import LogFormat, configure_logging
    from bot.runner.messages_api import MessagesApiRunner

    if claude_binary() is None:
        pytest.fail("claude binary missing: run `make tools`")
    monkeypatch.setenv("SHOP_DB_PASSWORD", CORPUS_ENV_VALUE)
    app = _corpus_app()
    service = scratch_service(tmp_path, files={"app.py": app})
    repo, log = service.repo, service.log
    _seed_history(repo)
    logs = io.StringIO()
    configure_logging(LogFormat.TEXT, level=logging.INFO, stream=logs)
    bot_api = FakeBotApi().start()
    messages_api = FakeMessagesApi(structured=_echoing_answer()).start()
    world: TelegramWorld | None = None
    try:
        cfg_path = tmp_path / "healbot.toml"
        cfg_path.write_text(config_text(tmp_path, repo, log, bot_api.base_url, 0.5))
        config = load_config(cfg_path)
        if runner_kind == "claude-cli":
            runner: object = fake_api_runner(config, messages_api.url, tmp_path / "claude")
        else:
            api_cfg = replace(config.claude, runner="messages_api", base_url=messages_api.url)
            runner = MessagesApiRunner(api_cfg, environ={"ANTHROPIC_API_KEY": "key-for-the-fake-api"})
        world = TelegramWorld(tmp_path, repo, log, config, bot_api, messages_api, runner, ShiftedClock())  # type: ignore[arg-type]
        await world.start_daemon()
        await world.connected()
        world.append(_corpus_record(repo, app))
        card = await world.card()
        bot_api.press(111, CHAT, card.message_id, text="Approve #1")
        await until(lambda: world.pipeline.results, 30, "the fix to be applied and verified")
        await world.card_shows(card.message_id, "kept")
        to_claude, to_telegram = everything_sent(world)
        await world.stop_daemon()
        world = None

        for argv in (["audit"], ["audit", "--format", "csv"], ["history"], ["status"]):
            assert main([argv[0], "-c", str(cfg_path), *argv[1:]]) == 0
        printed = capsys.readouterr()
        outputs = {
            "claude": to_claude,
            "telegram": to_telegram,
            "log": logs.getvalue(),
            "cli": printed.out + printed.err,
        }
        assert "request /total failed" in to_claude and "PRICES" in to_claude
        assert "PRICES.get(name, 0)" in to_telegram
        assert "incident_opened" in outputs["cli"]
        assert "claude run ended" in outputs["log"] or "diagnos" in outputs["log"]
        env_value = SecretSample("env", CORPUS_ENV_VALUE, CORPUS_ENV_VALUE)
        found = {name: corpus_leaks(text, (*SAMPLES, env_value)) for name, text in outputs.items()}
        assert found == {name: {} for name in outputs}
        assert "Ops " not in to_claude and "ops-corpus@corp.example" not in to_claude
    finally:
        if world is not None:
            await world.stop_daemon()
        bot_api.stop()
        messages_api.stop()
        configure_logging(LogFormat.TEXT, level=logging.WARNING)
