"""TelegramChannel: the ApprovalChannel over Telegram.

Cards and notifications go through the store's outbox, keyed per proposal, so a Telegram outage or a
daemon restart neither loses nor duplicates a card. One sender task drains the outbox and then brings
every card whose state changed up to date with a single edit (skipped when nothing changed, so Telegram
never answers "message is not modified"). Button presses are decoded exactly and always answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from telegram import InlineKeyboardMarkup, Message, ReplyParameters, Update
from telegram.constants import ParseMode
from telegram.ext import CallbackQueryHandler, ContextTypes

from bot.config import HealbotConfig
from bot.errors import HealbotError, StoreError
from bot.interfaces import Clock, DecisionHandler
from bot.models import ChangeStatus, Decision, DecisionAction, Incident, Proposal, StatusKind
from bot.pipeline import Pipeline
from bot.store import OutboxItem, Store
from bot.tasks import BackgroundTasks
from bot.telegram import cards
from bot.telegram.app import TelegramApp, TelegramRejected, TelegramUnavailable
from bot.telegram.auth import AllowList, Gate, actor
from bot.telegram.commands import Commands, on_change_button
from bot.telegram.followup import FollowUp

log = logging.getLogger("healbot.telegram.channel")

CARD = "card"
NOTE = "note"
DOC = "doc"
MAX_ATTEMPTS = 8
IDLE_WAKE_S = 30.0
RETIRE_SCAN = 20  # message ids looked at below a re-sent card for a copy delivered before a crash
STOP_GRACE_S = 5.0  # how long a stop waits for a message in flight to be recorded as sent
SETTLED = frozenset({ChangeStatus.KEPT, ChangeStatus.REVERTED, ChangeStatus.NEEDS_HUMAN, ChangeStatus.FAILED})
CHANGE_ACTIONS = frozenset({cards.CardAction.REVERT, cards.CardAction.CANCEL, cards.CardAction.KEEP})


def card_key(proposal_token: str) -> str:
    return f"card:{proposal_token}"


@dataclass
class _SentView:
    text: str
    markup: str


@dataclass
class _State:
    dirty: set[tuple[str, str]] = field(default_factory=set)  # (chat, outbox key) of cards to refresh
    views: dict[tuple[int, int], _SentView] = field(default_factory=dict)  # what each message shows now
    notes: int = 0


def _markup_json(markup: InlineKeyboardMarkup | None) -> str:
    return json.dumps(markup.to_dict() if markup else None, sort_keys=True)


class TelegramChannel:
    def __init__(
        self,
        config: HealbotConfig,
        store: Store,
        app: TelegramApp,
        *,
        scrub: Callable[[str], str],
        clock: Clock,
    ) -> None:
        self.config = config
        self.store = store
        self.app = app
        self.clock = clock
        self.allow = AllowList.from_config(config.approval.approvers, config.approval.chats)
        self._scrub = scrub
        self._pipeline: Pipeline | None = None
        self._decide: DecisionHandler | None = None
        self._state = _State()
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._tasks = BackgroundTasks(log, "telegram task")
        self.reverting: set[int] = set()
        self.backoff_s = app.settings.backoff_start_s

    # --- wiring ------------------------------------------------------------------------------------

    def bind(self, pipeline: Pipeline) -> None:
        """Called once the pipeline exists: commands and follow-ups need it."""
        self._pipeline = pipeline
        self._scrub = pipeline.scrub

    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            raise HealbotError("the Telegram channel was started before bind(pipeline)")
        return self._pipeline

    @property
    def host(self) -> str:
        return self.config.host_name

    @property
    def chats(self) -> tuple[int, ...]:
        return tuple(int(c) for c in self.config.approval.chats)

    def spawn(self, coro: Coroutine[Any, Any, object], name: str) -> None:
        self._tasks.spawn(coro, name)

    async def start(self, decide: DecisionHandler) -> None:
        self._decide = decide
        application = self.app.application
        application.add_handler(Gate(self.allow, self.store, self.clock).handler(), group=-1)
        Commands(self).register(application)
        application.add_handler(CallbackQueryHandler(self._on_button))
        FollowUp(self).register(application)
        self._closing.clear()
        self._sender = asyncio.get_running_loop().create_task(self._send_loop(), name="telegram-sender")
        await self.app.start(on_ready=self._on_ready)

    async def _on_ready(self) -> None:
        try:
            await self.app.bot.set_my_commands(cards.bot_commands())
        except Exception as exc:  # a cosmetic call: never block the channel on it
            log.warning("setMyCommands failed: %s", exc)
        self._wake.set()

    async def stop(self) -> None:
        if self._sender is not None:
            # A message in flight is let finish so that its message id is stored: cancelled between
            # Telegram's answer and the store, it would be sent again after the restart.
            self._closing.set()
            self._wake.set()
            await asyncio.wait({self._sender}, timeout=STOP_GRACE_S)
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
        await self._tasks.cancel_all()
        self._sender = None
        await self.app.stop()
        self._decide = None

    # --- ApprovalChannel ---------------------------------------------------------------------------

    async def present(self, incident: Incident, proposal: Proposal) -> None:
        payload = json.dumps(
            {"proposal": proposal.token, "inline": cards.diffs_fit(incident, proposal, host=self.host)},
            sort_keys=True,
        )
        lines_kept = bool(self.store.progress_lines(proposal.id))
        for chat in self.config.approval.chats:
            item = self.store.outbox_put(
                chat, card_key(proposal.token), CARD, payload, incident_id=incident.id, at=self.clock.now()
            )
            if item.message_id is not None and lines_kept:
                # presented again after a restart: a line stored but not yet shown before the stop shows now
                self._state.dirty.add((chat, item.key))
        self._wake.set()

    async def progress(self, incident: Incident, text: str) -> None:
        """The line goes on the card of the incident's latest proposal, kept in the store so that the card
        still shows it after a daemon restart; before the first proposal there is no card to show it.
        The first line said once the change is settled (its state is stored before it is said) is the
        verdict, which the card keeps shown."""
        self._add_line(incident, text, self._kind_of_next_line(incident))

    def _kind_of_next_line(self, incident: Incident) -> StatusKind:
        proposal = self.store.latest_proposal(incident.id)
        if proposal is None or self.store.has_verdict(proposal.id):
            return StatusKind.STEP
        change = self.store.change_of_proposal(proposal.id)
        settled = change is not None and change.status in SETTLED
        return StatusKind.VERDICT if settled else StatusKind.STEP

    def _add_line(self, incident: Incident, text: str, kind: StatusKind) -> None:
        try:
            token = self.store.add_progress(incident.id, self._scrub(text), at=self.clock.now(), kind=kind)
        except StoreError as exc:  # a status line is never worth stopping an apply for
            log.warning(
                "progress line of #%d not kept: %s", incident.id, exc, extra={"incident": incident.id}
            )
            return
        if token is not None:
            self._mark_card_dirty(token)

    async def notify(self, text: str) -> None:
        self._state.notes += 1
        key = f"note:{self.clock.now():.6f}:{self._state.notes}"
        payload = json.dumps({"text": self._scrub(text)})
        for chat in self.config.approval.chats:
            self.store.outbox_put(chat, key, NOTE, payload, incident_id=None, at=self.clock.now())
        self._wake.set()

    async def remind(self, incident: Incident, proposal: Proposal, text: str) -> None:
        """A reminder goes out as a reply to the proposal's card in each chat (a plain message where the
        card was never sent; Telegram sends it without the reply when the card was deleted)."""
        payload = json.dumps({"text": self._scrub(text), "card": proposal.token}, sort_keys=True)
        key = f"remind:{proposal.token}:{self.clock.now():.6f}"
        for chat in self.config.approval.chats:
            self.store.outbox_put(chat, key, NOTE, payload, incident_id=incident.id, at=self.clock.now())
        self._wake.set()

    def _mark_dirty(self, incident_id: int) -> None:
        proposal = self.store.latest_proposal(incident_id)
        if proposal is not None:
            self._mark_card_dirty(proposal.token)

    def _mark_card_dirty(self, proposal_token: str) -> None:
        for chat in self.config.approval.chats:
            self._state.dirty.add((chat, card_key(proposal_token)))
        self._wake.set()

    # --- sending -----------------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._wake.wait(), timeout=self.backoff_s if self._failing else IDLE_WAKE_S
                )
            self._wake.clear()
            if self._closing.is_set():
                return
            if not self.app.ready.is_set():
                continue
            try:
                await self._flush_outbox()
                await self._flush_edits()
            except TelegramUnavailable as exc:
                log.warning("Telegram unavailable (%s); retrying in %.1f s", exc, self.backoff_s)
                self._failing = True
                self.backoff_s = min(self.backoff_s * 2, self.app.settings.backoff_max_s)
                continue
            self._failing = False
            self.backoff_s = self.app.settings.backoff_start_s

    _failing = False

    async def _flush_outbox(self) -> None:
        for pending in self.store.outbox_pending():
            if self._closing.is_set():
                return
            if pending.attempts >= MAX_ATTEMPTS:
                continue
            maybe_delivered = (
                pending.sending_since is not None
            )  # an earlier attempt's answer was never stored
            item = pending
            if pending.kind == CARD:
                item = self.store.outbox_mark_sending(pending, at=self.clock.now())
            try:
                message_id = await self._deliver(item)
            except TelegramRejected as exc:
                log.error("Telegram refused %s for chat %s: %s", item.key, item.chat_id, exc)
                self.store.outbox_mark_failed(item.id, str(exc))
                continue
            except TelegramUnavailable as exc:
                self.store.outbox_mark_failed(item.id, str(exc))
                raise
            self.store.outbox_mark_sent(item.id, message_id, at=self.clock.now())
            if item.kind == CARD:
                self._after_card(item, message_id)
                if maybe_delivered:
                    await self._retire_lost_copies(item, message_id)

    async def _retire_lost_copies(self, item: OutboxItem, message_id: int) -> None:
        """A card sent again after a crash that came between Telegram's answer and the store: the copy
        that may exist lies between the chat's last recorded message and this one. Its buttons are
        removed (both copies carry the same token; a decision is taken once anyway), so only one card
        looks live. Messages of others cannot be edited and ours without buttons are "not modified":
        both answers are expected and ignored."""
        chat = int(item.chat_id)
        first = max((item.after_message_id or 0) + 1, message_id - RETIRE_SCAN)
        retired = 0
        for candidate in range(first, message_id):
            if self.store.outbox_by_message(item.chat_id, candidate) is not None:
                continue  # a message of ours whose send was recorded: not a lost copy
            try:
                await self.app.send(chat, functools.partial(self._remove_buttons, chat, candidate))
            except TelegramRejected:
                continue
            retired += 1
        if retired:
            log.warning(
                "retired the buttons of %d earlier copy(ies) of %s in chat %s", retired, item.key, chat
            )

    async def _remove_buttons(self, chat_id: int, message_id: int) -> object:
        return await self.app.bot.edit_message_reply_markup(
            chat_id=chat_id, message_id=message_id, reply_markup=None
        )

    async def _deliver(self, item: OutboxItem) -> int:
        payload = json.loads(item.payload)
        chat = int(item.chat_id)
        if item.kind == CARD:
            card = self._render_card(payload["proposal"], bool(payload["inline"]))
            if card is None:
                raise TelegramRejected(f"proposal {payload['proposal']} is gone")
            message = await self.send_html(chat, card.text, card.keyboard)
            return message.message_id
        if item.kind == DOC:
            proposal = self.store.proposal_by_token(payload["proposal"])
            if proposal is None:
                raise TelegramRejected(f"proposal {payload['proposal']} is gone")
            incident = self.store.incident(proposal.incident_id)
            message = await self.send_document(
                chat,
                cards.diff_document(proposal),
                cards.diff_filename(incident, proposal),
                cards.diff_caption(incident, proposal),
                reply_to=int(payload["reply_to"]),
            )
            return message.message_id
        reply_to = self._card_message(item.chat_id, payload["card"]) if "card" in payload else None
        message = await self.send_html(
            chat, cards.notification(str(payload["text"]), self.host), reply_to=reply_to
        )
        return message.message_id

    def _card_message(self, chat_id: str, proposal_token: str) -> int | None:
        card = self.store.outbox_item(chat_id, card_key(proposal_token))
        return card.message_id if card is not None else None

    def _after_card(self, item: OutboxItem, message_id: int) -> None:
        payload = json.loads(item.payload)
        if payload["inline"]:
            return
        proposal = self.store.proposal_by_token(payload["proposal"])
        if proposal is None or not any(c.diff for c in proposal.candidates):
            return
        doc = json.dumps({"proposal": proposal.token, "reply_to": message_id}, sort_keys=True)
        self.store.outbox_put(
            item.chat_id, f"doc:{proposal.token}", DOC, doc, incident_id=item.incident_id, at=self.clock.now()
        )
        self._wake.set()

    def _render_card(self, token: str, inline: bool) -> cards.Card | None:
        proposal = self.store.proposal_by_token(token)
        if proposal is None:
            return None
        incident = self.store.incident(proposal.incident_id)
        status = self.store.status_lines(proposal.id)
        change = self.store.change_of_proposal(proposal.id)
        if change is not None and change.id in self.reverting:
            change = None  # being reverted: no Keep or Revert meanwhile
        again = self._pipeline is not None and self._pipeline.offers_diagnose_again(incident)
        return cards.build_card(
            incident,
            proposal,
            status,
            diffs_inline=inline,
            host=self.host,
            change=change,
            diagnose_again=again,
        )

    async def _flush_edits(self) -> None:
        while self._state.dirty and not self._closing.is_set():
            chat, key = self._state.dirty.pop()
            item = self.store.outbox_item(chat, key)
            if item is None or item.message_id is None:
                continue  # not sent yet: it will be rendered fresh when it is
            payload = json.loads(item.payload)
            card = self._render_card(payload["proposal"], bool(payload["inline"]))
            if card is None:
                continue
            try:
                await self.edit_html(int(chat), item.message_id, card.text, card.keyboard)
            except TelegramUnavailable:
                self._state.dirty.add((chat, key))
                raise
            except TelegramRejected as exc:
                log.error("could not update card %s in chat %s: %s", key, chat, exc)

    # --- Bot API calls (all paced and mapped through the app) --------------------------------------

    async def send_html(
        self,
        chat_id: int,
        text: str,
        keyboard: InlineKeyboardMarkup | None = None,
        *,
        reply_to: int | None = None,
    ) -> Message:
        reply = ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None
        message = await self.app.send(
            chat_id,
            lambda: self.app.bot.send_message(
                chat_id, text, parse_mode=ParseMode.HTML, reply_markup=keyboard, reply_parameters=reply
            ),
        )
        self._state.views[(chat_id, message.message_id)] = _SentView(text, _markup_json(keyboard))
        return message  # type: ignore[no-any-return]

    async def edit_html(
        self, chat_id: int, message_id: int, text: str, keyboard: InlineKeyboardMarkup | None = None
    ) -> None:
        """Edit unless the message already shows exactly this; "not modified" counts as done."""
        view = _SentView(text, _markup_json(keyboard))
        if self._state.views.get((chat_id, message_id)) == view:
            return
        try:
            await self.app.send(
                chat_id,
                lambda: self.app.bot.edit_message_text(
                    text,
                    chat_id=chat_id,
                    message_id=message_id,
                    parse_mode=ParseMode.HTML,
                    reply_markup=keyboard,
                ),
            )
        except TelegramRejected as exc:
            if "not modified" not in str(exc):
                raise
        self._state.views[(chat_id, message_id)] = view

    async def send_document(
        self, chat_id: int, content: bytes, filename: str, caption: str, *, reply_to: int | None = None
    ) -> Message:
        reply = ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None
        message = await self.app.send(
            chat_id,
            lambda: self.app.bot.send_document(
                chat_id,
                content,
                filename=filename,
                caption=caption,
                parse_mode=ParseMode.HTML,
                reply_parameters=reply,
            ),
        )
        return message  # type: ignore[no-any-return]

    async def reply(
        self, update: Update, text: str, keyboard: InlineKeyboardMarkup | None = None
    ) -> Message | None:
        """Answer an allowed person in the chat they wrote in; Telegram trouble is logged, not raised."""
        message = update.effective_message
        chat = update.effective_chat
        if message is None or chat is None:
            return None
        try:
            return await self.send_html(chat.id, text, keyboard, reply_to=message.message_id)
        except (TelegramUnavailable, TelegramRejected) as exc:
            log.warning("could not reply in chat %s: %s", chat.id, exc)
            return None

    # --- buttons -----------------------------------------------------------------------------------

    async def _on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        answered = False

        async def answer(text: str) -> None:
            nonlocal answered
            if not answered:
                answered = True
                await query.answer(cards.answer(self._scrub(text)))

        try:
            callback = cards.decode_callback(query.data)
            who = actor(query.from_user.id)
            if callback is None:
                await answer("this button is not valid (any more): nothing was done")
            elif callback.action in CHANGE_ACTIONS:
                await on_change_button(self, update, callback, who, answer)
            elif callback.action is cards.CardAction.DIAGNOSE:
                await answer(await self.pipeline.diagnose_again(callback.proposal_token, who))
            elif callback.action is cards.CardAction.DETAILS:
                await answer("details below")
                await self._send_details(update, callback.proposal_token)
            else:
                await answer(await self._decide_from_button(callback, who))
        finally:
            if not answered:
                await query.answer()

    async def _decide_from_button(self, callback: cards.Callback, who: str) -> str:
        if self._decide is None:
            return "healbot is shutting down: nothing was done"
        proposal = self.store.proposal_by_token(callback.proposal_token)
        if proposal is None:
            return "unknown proposal: nothing was done"
        if callback.action is cards.CardAction.APPROVE:
            candidate = next((c for c in proposal.candidates if c.fix.rank == callback.rank), None)
            if candidate is None or not candidate.digest.startswith(callback.digest_prefix):
                return "the fix on this button is not the one stored: nothing was applied"
            decision = Decision(
                proposal.token, who, DecisionAction.APPROVE, candidate.fix.rank, candidate.digest
            )
        elif callback.action is cards.CardAction.REJECT:
            decision = Decision(proposal.token, who, DecisionAction.REJECT)
        else:
            decision = Decision(proposal.token, who, DecisionAction.SNOOZE)
        result = await self._decide(decision)
        if not result.accepted:
            self._add_line(self.store.incident(proposal.incident_id), result.message, StatusKind.REFUSAL)
        self._mark_dirty(proposal.incident_id)
        return result.message

    def is_card(self, chat_id: int, message_id: int) -> bool:
        item = self.store.outbox_by_message(str(chat_id), message_id)
        return item is not None and item.kind == CARD

    async def retire_buttons(self, chat_id: int, message_id: int, *, card: bool) -> None:
        """A card is brought up to date (its keyboard follows the state); any other message of ours just
        loses its buttons. Telegram trouble is logged: the press was answered already."""
        if card:
            item = self.store.outbox_by_message(str(chat_id), message_id)
            if item is not None:
                self._state.dirty.add((item.chat_id, item.key))
                self._wake.set()
            return
        try:
            await self.app.send(chat_id, functools.partial(self._remove_buttons, chat_id, message_id))
        except (TelegramUnavailable, TelegramRejected) as exc:
            log.warning("could not retire the buttons of message %s in chat %s: %s", message_id, chat_id, exc)

    async def _send_details(self, update: Update, token: str) -> None:
        proposal = self.store.proposal_by_token(token)
        chat = update.effective_chat
        message = update.effective_message
        if proposal is None or chat is None:
            return
        incident = self.store.incident(proposal.incident_id)
        text = cards.details_text(incident, proposal)
        reply_to = message.message_id if message else None
        try:
            if text is not None:
                await self.send_html(chat.id, text, reply_to=reply_to)
            else:
                await self.send_document(
                    chat.id,
                    cards.diff_document(proposal),
                    cards.diff_filename(incident, proposal),
                    cards.diff_caption(incident, proposal),
                    reply_to=reply_to,
                )
        except (TelegramUnavailable, TelegramRejected) as exc:
            log.warning("could not send details: %s", exc)
