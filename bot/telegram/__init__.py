"""The Telegram approval channel: cards with buttons, commands, follow-ups, resilient delivery."""

from __future__ import annotations

from collections.abc import Mapping

from bot.clock import SystemClock
from bot.config import HealbotConfig
from bot.errors import ConfigError
from bot.interfaces import Clock
from bot.redact import scrubber
from bot.store import Store
from bot.telegram.app import AppSettings, TelegramApp
from bot.telegram.channel import TelegramChannel

TOKEN_ENV = "HEALBOT_TELEGRAM_TOKEN"  # noqa: S105 (a variable name, not a secret)

__all__ = ["TOKEN_ENV", "TelegramChannel", "build_telegram_channel", "token_from_env"]


def token_from_env(environ: Mapping[str, str]) -> str:
    token = environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ConfigError(f"the telegram channel needs the bot token in the environment variable {TOKEN_ENV}")
    return token


def build_telegram_channel(
    config: HealbotConfig,
    store: Store,
    *,
    token: str,
    environ: Mapping[str, str],
    clock: Clock | None = None,
    min_chat_interval_s: float = 1.0,
    poll_timeout_s: float = 10.0,
    backoff_start_s: float = 0.5,
    backoff_max_s: float = 30.0,
) -> TelegramChannel:
    """The channel for `config.approval.channel == "telegram"`; call `bind(pipeline)` before `start`."""
    if not token:
        raise ConfigError(f"the telegram channel needs the bot token in {TOKEN_ENV}")
    scrub = scrubber(environ)
    app = TelegramApp(
        AppSettings(
            token=token,
            base_url=config.approval.telegram_base_url,
            poll_timeout_s=poll_timeout_s,
            min_chat_interval_s=min_chat_interval_s,
            backoff_start_s=backoff_start_s,
            backoff_max_s=backoff_max_s,
        )
    )
    return TelegramChannel(config, store, app, scrub=scrub, clock=clock or SystemClock())
