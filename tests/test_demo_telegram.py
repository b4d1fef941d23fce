"""`healbot demo --telegram` and its transcript: the real demo run as a subprocess, and the transcript built
from real python-telegram-bot calls to the bundled fake Bot API."""

from __future__ import annotations

import html.parser
import json
import re
from pathlib import Path

import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.constants import ParseMode

from bot.cli import main
from bot.demo.fake_bot_api import TOKEN, FakeBotApi
from bot.demo.transcript import (
    ChatEvent,
    EventKind,
    Transcript,
    render_html,
    render_text,
    safe_html,
    transcript_from,
)
from tests.conftest import claude_binary
from tests.test_cli import healbot

CHAT = -1001
OPERATOR = 77
_VOID = {"meta", "br", "hr", "img", "input", "link"}
_FORBIDDEN = ("src=", "href=", "url(", "@import", "<script", "<link", "<img", "<iframe", "https://")


class _Balance(html.parser.HTMLParser):
    """Every opened element is closed, in order: the page is one well-formed document."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def assert_self_contained(page: str) -> None:
    for needle in _FORBIDDEN:
        assert needle not in page, f"{needle!r} in the page"
    checker = _Balance()
    checker.feed(page)
    checker.close()
    assert checker.problems == [] and checker.stack == [], (checker.problems, checker.stack)


@pytest.mark.real_cli
@pytest.mark.supervisord
@pytest.mark.slow
def test_demo_telegram_approves_both_cards_and_writes_the_chat_page(tmp_path: Path) -> None:
    if claude_binary() is None:
        pytest.fail("claude binary missing: run `make tools`")
    summary, page_path = tmp_path / "summary.json", tmp_path / "out" / "chat.html"
    result = healbot(
        "demo",
        "--telegram",
        "--yes",
        "--html",
        str(page_path),
        "--summary-json",
        str(summary),
        "--workdir",
        str(tmp_path / "work"),
        timeout=110,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [kept, reverted] = json.loads(summary.read_text())["scenarios"]
    assert kept["action"] == "kept" and kept["verdict"] == "better" and kept["commit"]
    assert reverted["action"] == "reverted" and reverted["verdict"] == "worse" and reverted["revert_commit"]
    assert sum(s["seconds"] for s in (kept, reverted)) < 40

    out = result.stdout
    assert "FAKE Bot API" in out and "skipped: Telegram" not in out
    assert out.count("pressed [ Approve #1 ]") == 2
    assert "📎 incident-" in out and "+        price = PRICES.get(name)" in out  # the .diff document
    assert f"kept committed {kept['commit'][:10]}" in out
    assert f"reverted {reverted['commit'][:10]} with {reverted['revert_commit'][:10]}" in out
    assert "unknown item crashes checkout" in out.split("---")[-1]  # the summary table still follows

    page = page_path.read_text()
    assert_self_contained(page)
    assert "KeyError" in page and "ZeroDivisionError" in page
    assert "Reject unknown items instead of crashing in checkout_total" in page
    for label in ("Approve #1", "Approve #2", "Approve #3", "Reject", "Details", "Snooze 1 h"):
        assert f">{label}<" in page or f"✓ {label}<" in page, label
    assert page.count("pressed <b>Approve #1</b>") == 2
    assert page.count("✓ Approve #1") == 2
    assert page.count('class="edited"') == 2  # both cards carry the edited mark
    assert f"kept committed {kept['commit'][:10]}" in page
    assert f"reverted {reverted['commit'][:10]} with {reverted['revert_commit'][:10]}" in page
    assert re.search(r'<div class="docname">incident-1-[A-Za-z0-9_-]+\.diff</div>', page)
    assert '<span class="add">+        price = PRICES.get(name)</span>' in page
    assert "<details" in page and "show the diff" in page
    assert "approved #1 by telegram:" in page  # the answer to the press


def test_html_without_telegram_is_refused_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "chat.html"
    assert main(["demo", "--html", str(page), "--workdir", str(tmp_path / "work")]) == 1
    err = capsys.readouterr().err
    assert "--html" in err and "--telegram" in err
    assert not page.exists() and not (tmp_path / "work").exists()


async def test_transcript_from_real_bot_calls_shows_final_text_edits_presses_and_the_document() -> None:
    with FakeBotApi() as api:
        bot = Bot(TOKEN, base_url=api.base_url, base_file_url=api.base_file_url)
        async with bot:
            keyboard = InlineKeyboardMarkup(
                [
                    [
                        InlineKeyboardButton("Approve #1", callback_data="a1"),
                        InlineKeyboardButton("Reject", callback_data="r"),
                    ]
                ]
            )
            card = await bot.send_message(
                CHAT,
                "<b>#1 shop</b>: KeyError\nfingerprint <code>abc</code>",
                parse_mode=ParseMode.HTML,
                reply_markup=keyboard,
            )
            await bot.send_document(
                CHAT, b"+new line\n-old line\n", filename="incident-1.diff", caption="diffs for #1"
            )
            query = api.press(OPERATOR, CHAT, card.message_id, text="Approve #1")
            await bot.answer_callback_query(query, text="approved #1")
            await bot.edit_message_text(
                "<b>#1 shop</b>: KeyError\nfingerprint <code>abc</code>\n→ applying",
                chat_id=CHAT,
                message_id=card.message_id,
                parse_mode=ParseMode.HTML,
            )
            await bot.edit_message_text(
                "<b>#1 shop</b>: KeyError\nfingerprint <code>abc</code>\n→ applying\n→ kept",
                chat_id=CHAT,
                message_id=card.message_id,
                parse_mode=ParseMode.HTML,
            )
            await bot.send_message(CHAT + 1, "another chat")
    transcript = transcript_from(api, CHAT, chat_title="ops", people={OPERATOR: "Dana"})
    [first, document] = transcript.bubbles()
    assert first.text.endswith("→ applying\n→ kept") and first.edits == 2
    assert first.first_buttons == (("Approve #1", "Reject"),) and first.buttons_now == ()
    assert first.pressed == (("Approve #1", "Dana"),) and first.answers == ("approved #1",)
    assert document.attachment is not None and document.attachment.content == b"+new line\n-old line\n"
    assert document.attachment.filename == "incident-1.diff" and document.text == "diffs for #1"
    assert "another chat" not in render_text(transcript)

    text = render_text(transcript)
    assert "Dana 👆 pressed [ Approve #1 ] on message 1" in text
    assert "    + → kept" in text and "(buttons removed)" in text
    assert "healbot answers the press: “approved #1”" in text

    page = render_html(
        transcript, subtitle="sub", intro="intro", summary=[("scenario", "action"), ("x", "kept")]
    )
    assert_self_contained(page)
    assert "<b>#1 shop</b>" in page and "→ kept" in page and 'class="edited">edited ×2' in page
    assert (
        '<span class="btn pressed">✓ Approve #1</span>' in page
        and "buttons removed after the decision" in page
    )
    assert '<span class="add">+new line</span>' in page and '<span class="del">-old line</span>' in page
    assert '<td class="kept">kept</td>' in page


def test_bot_html_cannot_bring_links_scripts_or_attributes_into_the_page() -> None:
    hostile = (
        '<a href="https://evil.example/x">click</a> <b onclick="steal()">bold</b> '
        "<tg-spoiler>secret</tg-spoiler> &lt;script&gt;alert(1)&lt;/script&gt; <pre>a &amp; b</pre>"
    )
    assert safe_html(hostile) == (
        "click <b>bold</b> secret &lt;script&gt;alert(1)&lt;/script&gt; <pre>a &amp; b</pre>"
    )
    event = ChatEvent(0.0, EventKind.SENT, 1, "healbot", "click bold", hostile, (("go",),))
    press = ChatEvent(1.0, EventKind.PRESSED, 1, "<script>x</script>", "go")
    page = render_html(Transcript('"><script>', (event, press)), subtitle="<script>")
    assert_self_contained(page)
    assert "evil.example" not in page and "onclick" not in page
    assert "&lt;script&gt;x&lt;/script&gt; pressed <b>go</b>" in page


def test_an_edit_of_an_unknown_message_or_an_unanswered_press_is_not_invented() -> None:
    orphan_edit = ChatEvent(0.0, EventKind.EDITED, 9, "healbot", "text", "text")
    press = ChatEvent(1.0, EventKind.PRESSED, 9, "Dana", "Approve #1")
    transcript = Transcript("ops", (orphan_edit, press))
    assert transcript.bubbles() == []
    assert "edited message 9" in render_text(transcript)  # the console still says what happened
