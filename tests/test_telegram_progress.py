"""A card's progress lines live in the store: a daemon restart does not wipe them from the card.

Two TelegramChannel lifetimes (the real python-telegram-bot against the fake Bot API) over one state
database, opened again in between as a restarted daemon would; no daemon, no claude.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot import policy
from bot.config import HealbotConfig, load_config
from bot.interfaces import DecisionHandler
from bot.models import (
    Candidate,
    ChangeStatus,
    Decision,
    DecisionAction,
    DecisionResult,
    DiffStats,
    Edit,
    Fingerprint,
    Fix,
    FixKind,
    Frame,
    Incident,
    IncidentState,
    Proposal,
    ProposalStatus,
    Risk,
    RunStats,
    StatusKind,
    StatusLine,
)
from bot.store import MIGRATIONS, PROGRESS_KEEP, PROGRESS_LINE_CAP, Observation, Store
from bot.telegram import TelegramChannel, build_telegram_channel
from bot.telegram.channel import card_key
from tests.fakes.fake_bot_api import TOKEN, FakeBotApi, StoredMessage
from tests.fakes.world import APP, ShiftedClock
from tests.helpers import make_repo, until

CHAT = -100700
APPROVER = 111
SECRET = "hunter2-s3cr3t-value"


@dataclass
class Setup:
    config: HealbotConfig
    bot_api: FakeBotApi
    clock: ShiftedClock


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    repo = make_repo(tmp_path / "svc", {"app.py": APP})
    bot_api = FakeBotApi().start()
    cfg = tmp_path / "healbot.toml"
    cfg.write_text(
        f"""
[healbot]
state_dir = "{tmp_path}/state"

[approval]
channel = "telegram"
approvers = [{APPROVER}]
chats = [{CHAT}]
telegram_base_url = "{bot_api.base_url}"

[services.svc]
repo = "{repo}"
logs = ["{tmp_path}/svc.log"]

[services.svc.manager]
type = "command"
restart = ["true"]
"""
    )
    try:
        yield Setup(load_config(cfg), bot_api, ShiftedClock())
    finally:
        bot_api.stop()


def proposal_for(store: Store, key: str = "k1") -> tuple[Incident, Proposal]:
    fingerprint = Fingerprint(key, "svc", True, "KeyError", "KeyError: <str>", (Frame("app.py", 5, "total"),))
    [ingested] = store.ingest(
        "file:svc", "c1", [Observation(fingerprint, "KeyError: 'pear'", 1.0)], max_samples=3, at=1.0
    )
    incident_id = ingested.incident.id
    store.begin_diagnosis(incident_id, at=2.0)
    store.record_diagnosis(incident_id, RunStats("claude-cli", 1.0), summary="PRICES[name]", at=3.0)
    fix = Fix(1, "Use get", "unknown items", Risk.LOW, FixKind.PATCH, (Edit("app.py", "a[k]", "a.get(k)"),))
    candidate = Candidate(fix, "--- a/app.py\n+++ b/app.py\n", "d" * 64, DiffStats(1, 1, 1), True, "ok")
    proposal = store.create_proposal(
        incident_id,
        base_commit="b" * 40,
        candidates=[candidate],
        summary="PRICES[name]",
        at=4.0,
        expires_at=4.0 + 3600,
    )
    return store.incident(incident_id), proposal


async def _never_decides(decision: Decision) -> DecisionResult:
    raise AssertionError(f"no button is pressed in these tests: {decision}")


@asynccontextmanager
async def channel_lifetime(
    setup: Setup, decide: DecisionHandler = _never_decides
) -> AsyncIterator[TelegramChannel]:
    """One daemon lifetime of the channel: the state database opened, the bot connected; then both closed."""
    store = Store.open(setup.config.db_path)
    channel = build_telegram_channel(
        setup.config,
        store,
        token=TOKEN,
        environ={},
        clock=setup.clock,
        min_chat_interval_s=0.0,
        poll_timeout_s=2.0,
        backoff_start_s=0.1,
        backoff_max_s=0.5,
    )
    await channel.start(decide)
    try:
        await until(channel.app.ready.is_set, what="the bot connected to the fake Bot API")
        yield channel
    finally:
        await channel.stop()
        store.close()


async def card_sent(channel: TelegramChannel, proposal: Proposal) -> int:
    item = await until(
        lambda: (i := channel.store.outbox_item(str(CHAT), card_key(proposal.token))) and i.message_id and i,
        what="the card sent",
    )
    assert item.message_id is not None
    return item.message_id


async def card_shows(bot_api: FakeBotApi, message_id: int, contains: str) -> StoredMessage:
    return await until(
        lambda: (m := bot_api.message(CHAT, message_id)) and contains in m.text and m,
        what=f"card {message_id} to show {contains!r}",
    )


async def test_progress_lines_from_before_a_restart_stay_on_the_card(setup: Setup) -> None:
    async with channel_lifetime(setup) as channel:
        incident, proposal = proposal_for(channel.store)
        await channel.present(incident, proposal)
        message_id = await card_sent(channel, proposal)
        await channel.progress(incident, "applying #1: Use get")
        await channel.progress(incident, "committed abc123 → restarting svc")
        await card_shows(setup.bot_api, message_id, "restarting svc")

    async with channel_lifetime(setup) as channel:
        await channel.present(incident, proposal)  # what recovery does for a pending proposal on start
        await channel.progress(incident, "kept: health is no worse")
        card = await card_shows(setup.bot_api, message_id, "kept: health is no worse")

    status = card.text[card.text.index("status") :]
    assert status.splitlines() == [
        "status",
        "→ applying #1: Use get",
        "→ committed abc123 → restarting svc",
        "→ kept: health is no worse",
    ]
    cards = [m for m in setup.bot_api.bot_messages(CHAT) if "fingerprint" in m.text]
    assert [m.message_id for m in cards] == [message_id]  # edited, never sent again
    assert setup.bot_api.calls(ok=False) == []


async def test_hostile_progress_lines_stay_escaped_capped_and_scrubbed_after_a_restart(setup: Setup) -> None:
    huge = "x" * 10_240 + "THE-END-OF-A-10KB-LINE"
    async with channel_lifetime(setup) as channel:
        incident, proposal = proposal_for(channel.store)
        await channel.present(incident, proposal)
        message_id = await card_sent(channel, proposal)
        await channel.progress(incident, "<b>not bold</b> & <a href='http://x'>link</a> </pre>")
        await channel.progress(incident, huge)
        await channel.progress(incident, f"failed: password={SECRET}")
        await card_shows(setup.bot_api, message_id, "failed: password=")
        stored = channel.store.progress_lines(proposal.id)

    assert len(stored) == 3 and len(stored[1]) == PROGRESS_LINE_CAP and "…" in stored[1]
    assert stored[1].endswith("THE-END-OF-A-10KB-LINE")  # cut in the middle: the line's point is kept
    assert all(SECRET not in line for line in stored)

    async with channel_lifetime(setup) as channel:
        await channel.progress(incident, "after the restart")
        card = await card_shows(setup.bot_api, message_id, "after the restart")

    assert "→ <b>not bold</b> & <a href='http://x'>link</a> </pre>" in card.text  # shown as text
    assert "&lt;b&gt;not bold&lt;/b&gt; &amp; &lt;a href='http://x'&gt;" in card.raw
    assert "THE-END-OF-A-10KB-LINE\n" in card.text and "x" * 300 not in card.text
    assert SECRET not in card.raw and len(card.text) <= 4096
    assert setup.bot_api.calls(ok=False) == []


def test_the_newest_lines_of_a_card_are_kept_line_21_drops_line_1(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "h.db")
    incident, proposal = proposal_for(store)
    other_incident, other = proposal_for(store, "k2")
    store.add_progress(other_incident.id, "another card's line", at=5.0)
    for n in range(1, PROGRESS_KEEP + 2):
        assert store.add_progress(incident.id, f"line {n}", at=5.0 + n) == proposal.token
    assert PROGRESS_KEEP == 20
    assert store.progress_lines(proposal.id) == [f"line {n}" for n in range(2, 22)]
    assert store.progress_lines(other.id) == ["another card's line"]
    store.close()


def test_the_verdict_is_never_pruned_and_refusals_are_one_counted_line(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "h.db")
    incident, proposal = proposal_for(store)
    store.add_progress(incident.id, "kept for now: please decide", at=5.0, kind=StatusKind.VERDICT)
    for n in range(3):
        store.add_progress(incident.id, f"refused {n}", at=6.0 + n, kind=StatusKind.REFUSAL)
    for n in range(PROGRESS_KEEP + 5):
        store.add_progress(incident.id, f"line {n}", at=10.0 + n)
    lines = store.status_lines(proposal.id)
    assert lines[0] == StatusLine("kept for now: please decide", StatusKind.VERDICT)
    assert [line.text for line in lines[1:]] == [f"line {n}" for n in range(5, PROGRESS_KEEP + 5)]
    store.add_progress(incident.id, "refused again", at=50.0, kind=StatusKind.REFUSAL)
    assert store.status_lines(proposal.id)[-1] == StatusLine("refused again", StatusKind.REFUSAL, 1)
    other_incident, other = proposal_for(store, "k2")
    for n in range(3):
        store.add_progress(other_incident.id, f"no {n}", at=60.0 + n, kind=StatusKind.REFUSAL)
    assert store.status_lines(other.id) == [StatusLine("no 2", StatusKind.REFUSAL, 3)]
    store.close()


def test_a_snooze_moves_expiry_and_reminder_and_is_not_who_decided(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "h.db")
    _, proposal = proposal_for(store)
    store.mark_reminded(proposal.id)
    snooze = Decision(proposal.token, "telegram:1", DecisionAction.SNOOZE)
    until, expires_at = policy.snoozed(proposal, now=100.0)
    snoozed = store.snooze_proposal(
        proposal, snooze, until=until, expires_at=expires_at, message="s", at=100.0
    )
    assert snoozed is not None and snoozed.expires_at == proposal.expires_at + policy.SNOOZE_S
    assert snoozed.snoozed_until == 100.0 + policy.SNOOZE_S and not store.was_reminded(proposal.id)
    assert policy.reminder_at(snoozed, 600.0) == snoozed.expires_at - 600.0
    assert policy.reminder_at(snoozed, 5000.0) == snoozed.snoozed_until  # never while the snooze lasts
    assert store.decider(proposal.id) is None
    store.close_proposal(
        snoozed, ProposalStatus.REJECTED, None, incident_state=None, message="gone", at=101.0
    )
    assert store.snooze_proposal(snoozed, snooze, until=1.0, expires_at=2.0, message="s", at=102.0) is None
    store.close()


def test_a_line_before_the_first_proposal_has_no_card_and_a_new_proposal_starts_a_clean_card(
    tmp_path: Path,
) -> None:
    store = Store.open(tmp_path / "h.db")
    fingerprint = Fingerprint("k9", "svc", True, None, "boom", ())
    [ingested] = store.ingest("file:svc", "c", [Observation(fingerprint, "boom", 1.0)], max_samples=3, at=1.0)
    assert store.add_progress(ingested.incident.id, "diagnosing (read-only)…", at=2.0) is None
    incident, first = proposal_for(store)
    store.add_progress(incident.id, "the repo moved: re-diagnosing", at=5.0)
    second = store.create_proposal(
        incident.id,
        base_commit="c" * 40,
        candidates=list(first.candidates),
        summary="again",
        at=6.0,
        expires_at=9999.0,
    )
    assert store.add_progress(incident.id, "on the new card", at=7.0) == second.token
    assert store.progress_lines(first.id) == ["the repo moved: re-diagnosing"]  # the old card keeps its own
    assert store.progress_lines(second.id) == ["on the new card"]
    store.close()


def test_a_version_5_database_migrates_to_6_and_keeps_its_data(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    conn = sqlite3.connect(db, isolation_level=None)
    for script in MIGRATIONS[:5]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version = 5")
    conn.execute(
        "INSERT INTO incidents (service, fingerprint, title, state, first_seen, last_seen, count, samples)"
        " VALUES ('svc', 'k1', 'boom', 'awaiting_approval', 1.0, 2.0, 7, '[\"s\"]')"
    )
    conn.execute(
        "INSERT INTO proposals (incident_id, token, base_commit, candidates, summary, created_at, expires_at,"
        " status) VALUES (1, 'tok5', 'b', '[]', 'sum', 3.0, 9999.0, 'pending')"
    )
    conn.execute(
        "INSERT INTO outbox (chat_id, key, kind, payload, incident_id, created_at, sent_at, message_id)"
        " VALUES ('-1', 'card:tok5', 'card', '{}', 1, 3.0, 4.0, 42)"
    )
    conn.execute(
        "INSERT INTO template_clusters (service, is_error, key, template, size, updated_at)"
        " VALUES ('svc', 1, 'key', 'boom <*>', 3, 3.0)"
    )
    conn.close()

    store = Store.open(db)
    assert store.schema_version() == len(MIGRATIONS) >= 6  # to the latest, through 6
    [incident] = store.incidents()
    assert (incident.fingerprint, incident.count, incident.samples) == ("k1", 7, ("s",))
    proposal = store.proposal_by_token("tok5")
    assert proposal is not None and proposal.summary == "sum"
    sent = store.outbox_item("-1", "card:tok5")
    assert sent is not None and sent.message_id == 42
    assert [c.template for c in store.load_clusters("svc", True)] == ["boom <*>"]
    assert store.progress_lines(proposal.id) == []
    assert store.add_progress(incident.id, "restarting svc", at=5.0) == "tok5"
    store.close()
    store = Store.open(db)
    assert store.progress_lines(proposal.id) == ["restarting svc"]
    store.close()


async def test_a_stop_while_a_card_is_in_flight_records_it_so_the_restart_does_not_send_it_again(
    setup: Setup,
) -> None:
    answer_released = threading.Event()
    handle = setup.bot_api.handle

    def held_send(method: str, params: dict[str, Any], files: dict[str, bytes], token: str = TOKEN) -> Any:
        result = handle(method, params, files, token)
        if method == "sendMessage":
            answer_released.wait(10)  # Telegram has the card; its answer is still on the way
        return result

    setup.bot_api.handle = held_send  # type: ignore[method-assign]
    store = Store.open(setup.config.db_path)
    channel = build_telegram_channel(
        setup.config, store, token=TOKEN, environ={}, clock=setup.clock, min_chat_interval_s=0.0
    )
    await channel.start(_never_decides)
    await until(channel.app.ready.is_set, what="the bot connected to the fake Bot API")
    incident, proposal = proposal_for(store)
    await channel.present(incident, proposal)
    [card] = await until(lambda: setup.bot_api.bot_messages(CHAT), what="the card at Telegram")
    stopping = asyncio.create_task(channel.stop())
    await asyncio.sleep(0)  # one turn of the loop: the stop has begun, the send is still in flight
    answer_released.set()
    await stopping
    item = store.outbox_item(str(CHAT), card_key(proposal.token))
    store.close()
    assert item is not None and item.message_id == card.message_id

    async with channel_lifetime(setup) as channel:
        await channel.present(incident, proposal)
        await channel.notify("a note queued after the card")  # the outbox is drained in order
        await until(
            lambda: any("a note queued" in m.text for m in setup.bot_api.bot_messages(CHAT)),
            what="the note",
        )
    cards = [m for m in setup.bot_api.bot_messages(CHAT) if "fingerprint" in m.text]
    assert [m.message_id for m in cards] == [card.message_id]


async def test_a_line_stored_but_not_yet_shown_before_a_stop_shows_when_the_card_is_presented_again(
    setup: Setup,
) -> None:
    async with channel_lifetime(setup) as channel:
        incident, proposal = proposal_for(channel.store)
        await channel.present(incident, proposal)
        message_id = await card_sent(channel, proposal)
        channel.store.add_progress(incident.id, "verdict stored, then the daemon died", at=9.0)

    async with channel_lifetime(setup) as channel:
        await channel.present(incident, proposal)  # recovery presents every pending proposal on start
        await card_shows(setup.bot_api, message_id, "verdict stored, then the daemon died")


# --- issue 17.5 and 17.6: the verdict stays on the card, refusals are one line, a reminder answers its card

REFUSED = "the repo moved under this card: nothing was applied"


async def _refuses(decision: Decision) -> DecisionResult:
    return DecisionResult(False, REFUSED)


async def test_refused_presses_piled_up_until_the_verdict_scrolled_off_the_card(setup: Setup) -> None:
    async with channel_lifetime(setup, _refuses) as channel:
        incident, proposal = proposal_for(channel.store)
        await channel.present(incident, proposal)
        message_id = await card_sent(channel, proposal)
        for presses in range(1, 4):
            setup.bot_api.press(APPROVER, CHAT, message_id, text="Approve #1")
            await until(
                lambda n=presses: len(setup.bot_api.calls("answerCallbackQuery", ok=True)) == n,  # type: ignore[misc]
                what=f"press {presses} answered",
            )
        await card_shows(setup.bot_api, message_id, "(refused 3×)")

        [candidate] = proposal.candidates
        decision = Decision(
            proposal.token, f"telegram:{APPROVER}", DecisionAction.APPROVE, 1, candidate.digest
        )
        change = channel.store.approve_proposal(
            proposal, candidate, decision, service="svc", message="approved #1", at=5.0
        )
        assert change is not None
        channel.store.update_change(
            change.id,
            ChangeStatus.NEEDS_HUMAN,
            at=6.0,
            commit="c" * 40,
            incident_state=IncidentState.NEEDS_HUMAN,
        )
        verdict = (
            f"kept for now, but the verdict is same: please decide: Keep, or Revert (/revert {change.id})"
        )
        await channel.progress(incident, verdict)
        for n in range(8):
            await channel.progress(incident, f"later line {n}")
        card = await card_shows(setup.bot_api, message_id, "later line 7")
        [refusal] = [line for line in channel.store.status_lines(proposal.id) if line.text == REFUSED]

    status = card.text[card.text.index("\nstatus\n") :].strip().splitlines()
    assert status[0] == "status" and len(status) == 7, status
    assert status[1] == f"→ {verdict}"  # pinned above the newest lines
    assert status[2:] == [f"→ later line {n}" for n in range(3, 8)]
    assert [b["text"] for b in card.buttons()] == ["Keep", "Revert"]
    assert card.raw.count(REFUSED) == 0  # the collapsed refusals went with the older lines
    assert refusal.repeats == 3  # one line for three presses


async def test_the_reminder_was_not_a_reply_to_its_card_and_a_deleted_card_is_no_obstacle(
    setup: Setup,
) -> None:
    async with channel_lifetime(setup) as channel:
        incident, proposal = proposal_for(channel.store)
        await channel.present(incident, proposal)
        message_id = await card_sent(channel, proposal)
        await channel.remind(incident, proposal, "reminder: #1 svc has a fix waiting; it expires in 10 min")
        first = await until(
            lambda: [m for m in setup.bot_api.bot_messages(CHAT) if "reminder:" in m.text], what="a reminder"
        )
        assert first[0].reply_to == message_id

        setup.bot_api.delete(CHAT, message_id)  # someone tidied the chat up
        await channel.remind(incident, proposal, "reminder: #1 svc has a fix waiting; it expires in 5 min")
        both = await until(
            lambda: (
                (r := [m for m in setup.bot_api.bot_messages(CHAT) if "reminder:" in m.text])
                and len(r) == 2
                and r
            ),
            what="the second reminder",
        )
        assert "expires in 5 min" in both[1].text and both[1].reply_to is None
    assert setup.bot_api.calls(ok=False) == []
