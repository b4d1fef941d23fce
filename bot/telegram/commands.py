"""Slash commands. Thin: parse the arguments, call bot.operations or the pipeline, reply with a card text.

The gate in group -1 has already refused strangers. Bad arguments get a one-line usage reply. Slow work
(a diagnosis, a revert with its restart) runs in a background task so other updates keep flowing.

Several healbots in one group (one per server, each with its own token): PTB already ignores a command
addressed to another bot (`/status@other_bot`). An unaddressed command reaches every bot; read-only ones
(/status, /incidents, /history, /help) are answered by each. With `[approval] require_addressing = true`
the commands that change or start something (ADDRESSED_ONLY) run only when addressed to this bot; an
unaddressed one gets a one-line hint naming the addressed form, and nothing is done.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes, MessageHandler, filters

from bot import heartbeat, operations, policy
from bot.errors import HealbotError
from bot.flow import approval
from bot.models import Change
from bot.operations import UsageError
from bot.telegram import cards
from bot.telegram.auth import actor

if TYPE_CHECKING:
    from bot.telegram.channel import TelegramChannel

DIAGNOSE_USAGE = "/diagnose <service>"
REVERT_USAGE = "/revert <change id> (see /history)"

Handler = Callable[[Update, ContextTypes.DEFAULT_TYPE], Coroutine[Any, Any, None]]

ADDRESSED_ONLY = frozenset({"diagnose", "revert", "pause", "resume", "mute", "newsession"})


def is_addressed(update: Update) -> bool:
    """Whether the command names a bot (`/pause@web1_bot`); PTB has already dropped other bots' ones."""
    message = update.effective_message
    text = message.text if message is not None and message.text else ""
    return "@" in (text.split(maxsplit=1) or [""])[0]


def _who(update: Update) -> str:
    user = update.effective_user
    return actor(user.id) if user is not None else "telegram:unknown"


def _args(context: ContextTypes.DEFAULT_TYPE) -> list[str]:
    return list(context.args or [])


def unknown_command_line(name: str) -> str:
    known = ", ".join(f"/{command}" for command, _ in cards.COMMANDS)
    return f"unknown command /{name[:32]}; usage: one of {known} (/help says what each does)"


class Commands:
    def __init__(self, channel: TelegramChannel) -> None:
        self.channel = channel

    def register(self, application: Application) -> None:  # type: ignore[type-arg]
        table: dict[str, Handler] = {
            "diagnose": self.diagnose,
            "status": self.status,
            "incidents": self.incidents,
            "history": self.history,
            "revert": self.revert,
            "pause": self.pause,
            "resume": self.resume,
            "mute": self.mute,
            "newsession": self.newsession,
            "help": self.help,
            "start": self.help,
        }
        for name, handler in table.items():
            application.add_handler(CommandHandler(name, self._guarded(name, handler)))
        # Same group, after the known ones: reached only by a command none of them took.
        application.add_handler(MessageHandler(filters.COMMAND, self.unknown))

    def _guarded(self, name: str, handler: Handler) -> Handler:
        async def run(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            if (
                name in ADDRESSED_ONLY
                and self.channel.pipeline.config.approval.require_addressing
                and not is_addressed(update)
            ):
                hint = cards.address_hint(name, context.bot.username, self.channel.host)
                await self.channel.reply(update, hint)
                return
            try:
                await handler(update, context)
            except UsageError as exc:
                await self.channel.reply(update, cards.usage(str(exc)))
            except HealbotError as exc:
                await self.channel.reply(update, cards.plain(self.channel.pipeline.scrub(str(exc))))

        return run

    async def unknown(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A command healbot does not know gets the one-line usage reply; one for another bot gets nothing."""
        message = update.effective_message
        word = (message.text or "").split(maxsplit=1)[0] if message is not None and message.text else ""
        name, _, addressee = word.lstrip("/").partition("@")
        if addressee and addressee.lower() != (context.bot.username or "").lower():
            return
        await self.channel.reply(update, cards.usage(unknown_command_line(name)))

    async def help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self.channel.reply(update, cards.help_text())

    async def status(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        pipeline = self.channel.pipeline
        scans = heartbeat.load_scans(pipeline.config.state_dir) or ()
        await self.channel.reply(
            update,
            cards.status_text(
                operations.status(pipeline),
                host=self.channel.host,
                scans=heartbeat.scan_lines(scans, pipeline.clock.now()),
            ),
        )

    async def incidents(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self.channel.reply(
            update, cards.incidents_text(operations.open_incidents(self.channel.pipeline))
        )

    async def history(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        args = _args(context)
        if len(args) > 1:
            raise UsageError(f"usage: {operations.HISTORY_USAGE}")
        entries = operations.history(self.channel.pipeline, args[0] if args else None)
        await self.channel.reply(update, cards.history_text(entries))

    async def pause(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        duration = operations.parse_optional_duration(_args(context), operations.PAUSE_USAGE)
        until = operations.pause(self.channel.pipeline, _who(update), duration)
        await self.channel.reply(
            update,
            cards.plain(
                f"paused {cards.until_text(until)}: nothing is proposed or applied; detection goes on"
            ),
        )

    async def resume(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if _args(context):
            raise UsageError("usage: /resume")
        was_paused = operations.resume(self.channel.pipeline, _who(update))
        await self.channel.reply(update, cards.plain("resumed" if was_paused else "healbot was not paused"))

    async def mute(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        args = _args(context)
        if not args or len(args) > 2:
            raise UsageError(f"usage: {operations.MUTE_USAGE}")
        duration = operations.parse_optional_duration(args[1:], operations.MUTE_USAGE)
        until = operations.mute(self.channel.pipeline, args[0], _who(update), duration)
        await self.channel.reply(update, cards.plain(f"muted {args[0]} {cards.until_text(until)}"))

    async def newsession(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        args = _args(context)
        if len(args) != 1:
            raise UsageError(f"usage: {operations.NEWSESSION_USAGE}")
        had = operations.new_session(self.channel.pipeline, args[0], _who(update))
        said = "its Claude session is forgotten" if had else "it had no Claude session"
        await self.channel.reply(update, cards.plain(f"{args[0]}: {said}; its next diagnosis starts fresh"))

    async def diagnose(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        args = _args(context)
        pipeline = self.channel.pipeline
        if len(args) != 1:
            raise UsageError(f"usage: {DIAGNOSE_USAGE}; services: {', '.join(pipeline.services)}")
        service = args[0]
        if service not in pipeline.services:
            raise UsageError(
                f"unknown service {service!r}; usage: {DIAGNOSE_USAGE}; services: {', '.join(pipeline.services)}"
            )
        who = _who(update)
        await self.channel.reply(update, cards.plain(f"diagnosing {service} (read-only)…"))

        async def run() -> None:
            try:
                _, message = await pipeline.diagnose_on_demand(service, who)
            except HealbotError as exc:
                message = f"diagnosis failed: {exc}"
            await self.channel.reply(update, cards.plain(pipeline.scrub(message)))

        self.channel.spawn(run(), f"telegram-diagnose-{service}")

    async def revert(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        change_id = operations.parse_change_id(_args(context), REVERT_USAGE)
        change = self.channel.store.change(change_id)
        if change is None or change.commit is None:
            raise UsageError(f"change {change_id} does not exist or made no commit; usage: {REVERT_USAGE}")
        if change.revert_commit:
            raise HealbotError(f"change {change_id} was already reverted by {change.revert_commit[:10]}")
        card = cards.revert_confirm(change)
        await self.channel.reply(update, card.text, card.keyboard)


async def on_change_button(
    channel: TelegramChannel,
    update: Update,
    callback: cards.Callback,
    who: str,
    answer: Callable[[str], Awaitable[None]],
) -> None:
    """The buttons about a change: confirm or cancel a /revert, and Keep or Revert on a card whose
    verdict was left to a person. A button for a change that is past that says so and does nothing."""
    message = update.effective_message
    chat = update.effective_chat
    assert callback.change_id is not None
    if message is None or chat is None:
        await answer("nothing was done")
        return
    change_id = callback.change_id
    if callback.action is cards.CardAction.CANCEL:
        await answer("cancelled")
        await channel.edit_html(
            chat.id, message.message_id, cards.plain(f"revert of change {change_id} cancelled")
        )
        return
    on_card = channel.is_card(chat.id, message.message_id)
    if change_id in channel.reverting:
        await answer(f"change {change_id} is being reverted already")
        return
    stale = _past_deciding(channel.store.change(change_id), change_id, on_card=on_card)
    if stale is not None:
        await answer(stale)
        await channel.retire_buttons(chat.id, message.message_id, card=on_card)
        return
    if callback.action is cards.CardAction.KEEP:
        result = await approval.keep_change(channel.pipeline, change_id, who)
        await answer(result.message)
        return
    channel.reverting.add(change_id)
    await answer(f"reverting change {change_id}…")
    if on_card:
        await channel.retire_buttons(chat.id, message.message_id, card=True)

    async def run() -> None:
        try:
            text = await channel.pipeline.revert_change(change_id, who)
        except HealbotError as exc:
            text = f"revert of change {change_id} failed: {exc}"
        finally:
            channel.reverting.discard(change_id)
        said = channel.pipeline.scrub(f"{text} (by {who})")
        change = channel.store.change(change_id)
        if change is not None:
            await channel.progress(channel.store.incident(change.incident_id), said)
        if not on_card:
            await channel.edit_html(chat.id, message.message_id, cards.plain(said))

    channel.spawn(run(), f"telegram-revert-{change_id}")


def _past_deciding(change: Change | None, change_id: int, *, on_card: bool) -> str | None:
    """Why a Keep or Revert press can do nothing any more, or None while it can."""
    if change is None or change.commit is None:
        return f"change {change_id} does not exist or made no commit: nothing was done"
    if change.revert_commit:
        return f"change {change_id} was already reverted by {change.revert_commit[:10]}: nothing was done"
    if on_card and not policy.awaits_decision(change):
        return f"change {change_id} is {change.status.value} already: nothing was done"
    return None
