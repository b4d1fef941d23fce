"""Where secrets used to leave (issue 11 item 6), one regression test per way out: the card's title, fix
title and rationale; the CLI runner's prompt and the Messages-API runner's request; Claude Code's own
`gitStatus` block; the INFO log; the audit export; `healbot scan`."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from bot.config import ClaudeConfig
from bot.demo.fake_messages_api import FakeMessagesApi
from bot.models import (
    Candidate,
    DiffStats,
    Fix,
    FixKind,
    Incident,
    IncidentState,
    Proposal,
    ProposalStatus,
    Risk,
    RunRequest,
)
from bot.runner.claude_cli import ClaudeCliRunner
from bot.telegram import cards
from tests.conftest import claude_binary
from tests.fakes.daemon_proc import FAKE_CLAUDE_ENV
from tests.helpers import git, make_repo
from tests.secret_corpus import SAMPLES, SecretSample, leaks

NAMED = {s.kind: s for s in SAMPLES}
SEEDS = [NAMED[k] for k in ("aws_access_key", "sendgrid", "twilio_account", "card_visa", "pypi", "named_pw")]


def _card(title: str, fix_title: str, rationale: str, summary: str) -> str:
    now = time.time()
    incident = Incident(1, "svc", "3f2a9c1b", title, IncidentState.AWAITING_APPROVAL, now, now, 3, ("boom",))
    fix = Fix(1, fix_title, rationale, Risk.LOW, FixKind.PATCH)
    candidate = Candidate(fix, "--- a/app.py\n+++ b/app.py\n-x\n+y\n", "ab" * 32, DiffStats(1, 1, 1))
    proposal = Proposal(
        7, 1, "tok", "c0ffee" * 6, (candidate,), now, now + 3600, ProposalStatus.PENDING, summary
    )
    texts = [cards.card_text(incident, proposal, [f"applying {fix_title}"], diffs_inline=True)]
    texts.append(cards.details_text(incident, proposal) or "")
    texts.append(cards.diff_document(proposal).decode())
    texts.append(cards.incidents_text([incident]))
    return "\n".join(texts)


@pytest.mark.parametrize("sample", SEEDS, ids=lambda s: s.kind)
def test_card_renders_incident_title_fix_title_and_rationale_redacted(sample: object) -> None:
    assert sample in SEEDS
    text = _card(
        f"upstream failed with {sample.text}",  # type: ignore[attr-defined]
        f"rotate {sample.text}",  # type: ignore[attr-defined]
        f"the log shows {sample.text} in the request",  # type: ignore[attr-defined]
        f"summary: {sample.text}",  # type: ignore[attr-defined]
    )
    assert leaks(text, (sample,)) == {}, text  # type: ignore[arg-type]
    assert "[REDACTED:" in text


def _git_repo_with_secrets(root: Path) -> tuple[Path, list[str]]:
    repo = make_repo(root / "repo", {"app.py": "x = 1\n"})
    subjects = [f"deploy: use {s.text}" for s in SEEDS]
    for index, subject in enumerate(subjects):
        (repo / "app.py").write_text(f"x = {index + 2}\n")
        git(repo, "add", "app.py")
        git(
            repo,
            "-c",
            "user.name=Ops Person Zqx",
            "-c",
            "user.email=ops-zqx@corp.example",
            "commit",
            "-q",
            "-m",
            subject,
        )
    return repo, subjects


def test_git_status_never_reaches_claude(tmp_path: Path) -> None:
    """Claude Code adds `gitStatus` (branch, recent commit subjects, the git user) to its system prompt
    unless CLAUDE_CODE_DISABLE_GIT_INSTRUCTIONS is set; healbot's runner sets it."""
    binary = claude_binary() or pytest.fail("claude binary missing: run `make tools`")
    repo, subjects = _git_repo_with_secrets(tmp_path)
    with FakeMessagesApi(structured={"summary": "s", "candidates": []}) as api:
        env = {"ANTHROPIC_BASE_URL": api.url, **FAKE_CLAUDE_ENV}
        runner = ClaudeCliRunner(ClaudeConfig(binary=binary), extra_env=env, config_dir=tmp_path / "claude")
        asyncio.run(runner.run(RunRequest(prompt="why?", schema='{"type":"object"}', cwd=str(repo))))
        sent = "\n".join(entry.text() for entry in api.message_requests())
    assert api.message_requests()
    assert "gitStatus" not in sent and "Recent commits" not in sent
    assert "Ops Person Zqx" not in sent and "ops-zqx@corp.example" not in sent
    assert leaks(sent, tuple(SEEDS)) == {}
    assert not [s for s in subjects if s in sent]


@pytest.mark.parametrize("sample", SEEDS, ids=lambda s: s.kind)
def test_cli_runner_prompt_is_redacted_at_the_boundary(tmp_path: Path, sample: object) -> None:
    binary = claude_binary() or pytest.fail("claude binary missing: run `make tools`")
    with FakeMessagesApi(structured={"summary": "s", "candidates": []}) as api:
        env = {"ANTHROPIC_BASE_URL": api.url, **FAKE_CLAUDE_ENV}
        runner = ClaudeCliRunner(ClaudeConfig(binary=binary), extra_env=env, config_dir=tmp_path / "claude")
        prompt = f"the log says: upstream failed with {sample.text}"  # type: ignore[attr-defined]
        request = RunRequest(
            prompt=prompt, schema='{"type":"object"}', cwd=str(tmp_path), system_prompt=prompt
        )
        asyncio.run(runner.run(request))
        sent = "\n".join(entry.text() for entry in api.message_requests())
    assert "the log says" in sent
    assert leaks(sent, (sample,)) == {}  # type: ignore[arg-type]


@pytest.mark.parametrize("sample", SEEDS, ids=lambda s: s.kind)
def test_messages_api_request_is_redacted_at_the_boundary(tmp_path: Path, sample: object) -> None:
    from bot.runner.messages_api import MessagesApiRunner

    with FakeMessagesApi(structured={"summary": "s", "candidates": []}) as api:
        cfg = ClaudeConfig(runner="messages_api", base_url=api.url)
        runner = MessagesApiRunner(cfg, environ={"ANTHROPIC_API_KEY": "test-key-for-the-fake"})
        prompt = f"the log says: upstream failed with {sample.text}"  # type: ignore[attr-defined]
        request = RunRequest(
            prompt=prompt, schema='{"type":"object"}', cwd=str(tmp_path), system_prompt=prompt
        )
        asyncio.run(runner.run(request))
        sent = "\n".join(entry.text() for entry in api.message_requests())
    assert "the log says" in sent
    assert leaks(sent, (sample,)) == {}  # type: ignore[arg-type]


def _error_log(path: Path) -> Path:
    lines = [
        f"2026-12-03 11:00:0{i % 10},000 ERROR app[42]: upstream failed with {s.text}"
        for i, s in enumerate(SAMPLES)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_scan_shows_templates_and_samples_redacted_and_raw_only_with_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.cli import main

    log = _error_log(tmp_path / "app.log")
    assert main(["scan", str(log)]) == 0
    shown = capsys.readouterr().out
    assert "upstream failed with" in shown and "[REDACTED:" in shown
    assert leaks(shown) == {}
    assert main(["scan", "--raw", str(log)]) == 0
    raw = capsys.readouterr().out
    assert leaks(raw, tuple(SEEDS)).keys() == {s.kind for s in SEEDS}  # the raw lines, as the flag says


def test_cli_printouts_pass_redaction(capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli import main

    secret = NAMED["github_pat"]
    # a config error names the bad value: what the CLI prints on stderr is redacted too
    assert main(["status", "-c", f"/nonexistent/{secret.secret}.toml"]) != 0
    printed = capsys.readouterr()
    assert leaks(printed.out + printed.err, (secret,)) == {}
    assert "[REDACTED:" in printed.err


def test_info_log_is_redacted_in_messages_args_and_tracebacks() -> None:
    import io

    from bot.logging_setup import LogFormat, configure_logging

    for fmt in LogFormat:
        stream = io.StringIO()
        configure_logging(fmt, level=logging.INFO, stream=stream, environ={})
        log = logging.getLogger("healbot.test")
        for sample in SEEDS:
            log.info("upstream failed with %s", sample.text)
            log.info(f"message text {sample.text}")
            try:
                raise RuntimeError(f"boom {sample.text}")
            except RuntimeError:
                log.exception("failed")
        written = stream.getvalue()
        assert "upstream failed with" in written
        assert leaks(written, tuple(SEEDS)) == {}, written


def test_audit_export_is_redacted_in_every_format(tmp_path: Path) -> None:
    from bot.audit_export import AUDIT_FIELDS, ExportFormat, audit_rows, render
    from bot.store import Store

    store = Store.open(tmp_path / "state.db")
    for sample in SEEDS:
        store.audit("alice", "note", f"saw {sample.text}", at=time.time())
    rows = audit_rows(store, since=None)
    for fmt in ExportFormat:
        text = render(rows, AUDIT_FIELDS, fmt)
        assert "saw " in text
        assert leaks(text, tuple(SEEDS)) == {}, text


def test_code_window_that_cuts_a_pem_begin_line_is_redacted(tmp_path: Path) -> None:
    from bot.evidence import LINES_BEFORE, _code_contexts
    from bot.models import Frame
    from bot.redact import redacted

    body = [NAMED["base64_token"].secret.rstrip("=")[:40] + NAMED["aws_secret_key"].secret[:24]] * 20
    body.append(NAMED["hex_token"].secret[:22] + "==")
    pem = ["KEY = '''-----BEGIN RSA PRIVATE KEY-----", *body, "-----END RSA PRIVATE KEY-----'''"]
    code = [*pem, "", "def total(name):", "    return PRICES[name]"]
    failing = len(code)
    assert failing - LINES_BEFORE > 1  # the window starts below the BEGIN line
    repo = make_repo(tmp_path / "repo", {"app.py": "\n".join(code) + "\n"})
    [context] = _code_contexts(repo, [Frame(str(repo / "app.py"), failing, "total")], redacted)
    assert "return PRICES[name]" in context.snippet
    assert f"> {failing} |" in context.snippet  # line numbers stay right
    for line in body:
        assert leaks(context.snippet, (SecretSample("pem", line, line),)) == {}, context.snippet


@pytest.mark.parametrize("sample", SEEDS, ids=lambda s: s.kind)
def test_telegram_short_texts_and_the_console_channel_are_redacted(sample: SecretSample) -> None:
    import io

    from bot.console import ConsoleChannel

    said = f"the answer mentions {sample.text} twice: {sample.text}"
    texts = [
        cards.followup_text(f"why {sample.text}?", said),
        cards.notification(said, "host-a"),
        cards.plain(said),
        cards.answer(said),
    ]
    out = io.StringIO()
    now = time.time()
    incident = Incident(1, "svc", "3f2a9c1b", f"title {sample.text}", IncidentState.OPEN, now, now, 1, ())
    channel = ConsoleChannel(out=out, interactive=False)
    asyncio.run(channel.notify(said))
    asyncio.run(channel.progress(incident, said))
    texts.append(out.getvalue())
    for text in texts:
        assert "mentions" in text or "why" in text or "title" in text
        assert leaks(text, (sample,)) == {}, text
