"""Unit tests for card texts, keyboards, callback data, the allow-list and the fake Bot API's limits."""

from __future__ import annotations

import time

import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import BadRequest, RetryAfter

from bot.errors import ConfigError
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
    StatusKind,
    StatusLine,
)
from bot.operations import UsageError, parse_change_id, parse_optional_duration
from bot.render import hour_minute
from bot.telegram import cards
from bot.telegram.app import file_url_for
from bot.telegram.auth import AllowList
from tests.fakes.fake_bot_api import TOKEN, FakeBotApi, parse_text

DIGEST = "ab" * 32


def incident(sample: str = "KeyError: 'pear'", title: str = "KeyError in total") -> Incident:
    now = time.time()
    return Incident(1, "svc", "3f2a9c1b", title, IncidentState.AWAITING_APPROVAL, now, now, 3, (sample,))


def proposal(
    diff: str = "--- a/app.py\n+++ b/app.py\n-x\n+y\n", rationale: str = "because", n: int = 2
) -> Proposal:
    candidates = tuple(
        Candidate(
            Fix(i, f"fix {i} <b>", rationale, Risk.LOW, FixKind.PATCH), diff, DIGEST, DiffStats(1, 1, 1)
        )
        for i in range(1, n + 1)
    )
    now = time.time()
    return Proposal(
        7,
        1,
        "Tok_en-123abcXYZ",
        "c0ffee" * 6,
        candidates,
        now,
        now + 3600,
        ProposalStatus.PENDING,
        "summary & <stuff>",
    )


def test_card_escapes_html_and_parses_as_telegram_html() -> None:
    card = cards.build_card(
        incident("<script>&amp; x < y</script>"), proposal(), ["applying #1"], diffs_inline=True
    )
    plain = parse_text(card.text, "HTML")
    assert "<script>&amp; x < y</script>" in plain
    assert "fix 1 <b>" in plain and "summary & <stuff>" in plain
    assert "→ applying #1" in plain


def test_card_never_exceeds_4096_even_with_huge_parts() -> None:
    huge = "\n".join("E" * 500 + f" {i} <&>" for i in range(200))
    p = proposal(diff="+" + "z" * 9000 + "\n", rationale="r<" * 5000, n=3)
    i = incident(huge, title="T" * 5000)
    inline = cards.diffs_fit(i, p)
    assert inline is False
    card = cards.build_card(i, p, ["s<" * 500] * 20, diffs_inline=inline)
    assert len(card.text) <= 4096
    parse_text(card.text, "HTML")  # still valid HTML after shrinking
    assert "full diff attached" in card.text


def test_small_diffs_are_inline() -> None:
    assert cards.diffs_fit(incident(), proposal())


def test_keyboard_buttons_and_exact_callback_data() -> None:
    p = proposal(n=3)
    keyboard = cards.card_keyboard(p)
    assert keyboard is not None
    buttons = [b for row in keyboard.inline_keyboard for b in row]
    assert [b.text for b in buttons] == [
        "Approve #1",
        "Approve #2",
        "Approve #3",
        "Reject",
        "Details",
        "Snooze 1 h",
    ]
    for button in buttons:
        data = str(button.callback_data)
        assert len(data.encode()) <= 64
        decoded = cards.decode_callback(data)
        assert decoded is not None and decoded.proposal_token == p.token
    approve = cards.decode_callback(str(buttons[1].callback_data))
    assert approve == cards.Callback(cards.CardAction.APPROVE, p.token, 2, DIGEST[:12])


@pytest.mark.parametrize(
    "data",
    [
        None,
        "",
        "a1:Tok_en-123abcXYZ:ABABABABABAB",  # digest prefix upper-cased
        "A1:Tok_en-123abcXYZ:abababababab",  # action upper-cased
        "a1:Tok_en-123abcXYZ:abababababab ",  # padded
        "a1:Tok_en-123abcXYZ",  # no digest
        "r:Tok en",
        "x:Tok_en-123abcXYZ",
        "v:12a",
        "r:" + "t" * 70,
    ],
)
def test_anything_but_an_exact_encoding_is_refused(data: str | None) -> None:
    assert cards.decode_callback(data) is None


def test_a_case_changed_token_decodes_to_a_different_token() -> None:
    decoded = cards.decode_callback("r:TOK_EN-123ABCXYZ")
    assert decoded is not None and decoded.proposal_token != proposal().token


def test_no_keyboard_once_decided() -> None:
    import dataclasses

    assert cards.card_keyboard(dataclasses.replace(proposal(), status=ProposalStatus.APPROVED)) is None


def test_texts_stay_within_limits() -> None:
    assert len(cards.answer("x" * 500)) == 200
    assert len(cards.plain("<" * 10000)) <= 4096
    parse_text(cards.plain("<" * 10000), "HTML")
    assert all(1 <= len(d) <= 256 and n.islower() for n, d in cards.COMMANDS)


def test_allow_list_needs_both_user_and_chat() -> None:
    allow = AllowList.from_config(["111"], ["-100", "111"])
    assert allow.allows(111, -100) and allow.allows(111, 111)
    assert not allow.allows(999, -100)
    assert not allow.allows(111, 999)
    assert not allow.allows(None, -100) and not allow.allows(111, None)


def test_allow_list_refuses_non_numeric_ids() -> None:
    with pytest.raises(ConfigError, match=r"approval\.approvers"):
        AllowList.from_config(["@alice"], ["-100"])


def test_argument_parsing_gives_usage() -> None:
    assert parse_optional_duration([], "u") is None
    assert parse_optional_duration(["2h"], "u") == 7200
    with pytest.raises(UsageError, match=r"usage: u"):
        parse_optional_duration(["soon"], "u")
    with pytest.raises(UsageError, match=r"usage: u"):
        parse_optional_duration(["1h", "2h"], "u")
    assert parse_change_id(["#4"], "r") == 4
    with pytest.raises(UsageError):
        parse_change_id(["four"], "r")


def test_file_url() -> None:
    assert file_url_for("http://127.0.0.1:5/bot") == "http://127.0.0.1:5/file/bot"


# --- the fake enforces Telegram's limits (so the bot's bugs would show) ----------------------------


@pytest.fixture
async def bot_and_fake():  # type: ignore[no-untyped-def]
    fake = FakeBotApi().start()
    bot = Bot(TOKEN, base_url=fake.base_url, base_file_url=fake.base_file_url)
    await bot.initialize()
    yield bot, fake
    await bot.shutdown()
    fake.stop()


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
async def test_fake_enforces_limits(bot_and_fake) -> None:  # type: ignore[no-untyped-def]
    bot, fake = bot_and_fake
    with pytest.raises(BadRequest, match=r"(?i)too long"):
        await bot.send_message(-1, "x" * 4097)
    with pytest.raises(BadRequest, match=r"(?i)parse entities"):
        await bot.send_message(-1, "a < b", parse_mode="HTML")
    too_long_data = InlineKeyboardMarkup([[InlineKeyboardButton("b", callback_data="d" * 65)]])
    with pytest.raises(BadRequest, match=r"(?i)button_data_invalid"):
        await bot.send_message(-1, "hi", reply_markup=too_long_data)
    message = await bot.send_message(-1, "<b>hi</b>", parse_mode="HTML")
    with pytest.raises(BadRequest, match=r"(?i)not modified"):
        await bot.edit_message_text("<b>hi</b>", chat_id=-1, message_id=message.message_id, parse_mode="HTML")
    with pytest.raises(BadRequest, match=r"(?i)query is too old"):
        await bot.answer_callback_query("q-unknown")
    fake.fail_next("sendMessage", 429, retry_after=3)
    with pytest.raises(RetryAfter):
        await bot.send_message(-1, "flood")
    assert [c.status for c in fake.calls("sendMessage")] == [400, 400, 400, 200, 429]


async def test_fake_answers_a_query_once(bot_and_fake) -> None:  # type: ignore[no-untyped-def]
    bot, fake = bot_and_fake
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Go", callback_data="go")]])
    message = await bot.send_message(-1, "card", reply_markup=keyboard)
    query_id = fake.press(1, -1, message.message_id, text="Go")
    assert await bot.answer_callback_query(query_id, "ok")
    with pytest.raises(BadRequest, match=r"(?i)query is too old"):
        await bot.answer_callback_query(query_id, "again")
    with pytest.raises(AssertionError, match="no button"):
        fake.press(1, -1, message.message_id, text="Missing")


def test_status_lines_cut_at_200_characters_lost_their_point() -> None:
    long = (
        "health got worse ("
        + "new error fingerprint abc123 (4); " * 12
        + "): please look; revert with /revert 3"
    )
    text = cards.card_text(incident(), proposal(), [long], diffs_inline=True)
    [line] = [line for line in parse_text(text, "HTML").splitlines() if line.startswith("→ ")]
    assert line.endswith("please look; revert with /revert 3") and line.startswith("→ health got worse (")
    assert "…" in line and len(line) <= cards.MAX_STATUS_LINE + 2


def test_a_refusal_line_says_how_many_presses_it_stands_for() -> None:
    status = [StatusLine("applying #1"), StatusLine("already approved", StatusKind.REFUSAL, 4)]
    plain = parse_text(cards.card_text(incident(), proposal(), status, diffs_inline=True), "HTML")
    assert "→ already approved (refused 4×)" in plain


def test_snoozed_card_says_until_when_and_keeps_its_buttons() -> None:
    import dataclasses

    snoozed = dataclasses.replace(proposal(), snoozed_until=time.time() + 3600)
    card = cards.build_card(incident(), snoozed, [], diffs_inline=True)
    assert f"snoozed until {hour_minute(snoozed.snoozed_until or 0)}" in card.text
    assert card.keyboard is not None


def test_usage_is_said_only_for_usage_errors() -> None:
    assert cards.usage("change 3 was already reverted by abc") == "change 3 was already reverted by abc"
    assert cards.usage("usage: /revert N") == "usage: /revert N"
