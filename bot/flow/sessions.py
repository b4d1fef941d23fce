"""Claude sessions per service: a new incident of a service diagnosed within `[claude] session_minutes`
of its session's start, and before `session_messages` diagnoses went into it, resumes that session instead
of starting cold (claude already knows the service's code and recent history). `/newsession <service>`
forgets it. Kept in the store's settings (`claude_session:<service>`), so a restart keeps it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from bot.config import ClaudeConfig
from bot.models import RunStats
from bot.store import Store

SETTING_PREFIX = "claude_session:"
ACTOR = "healbot"


@dataclass(frozen=True, slots=True)
class ServiceSession:
    session_id: str
    runner: str
    started_at: float
    messages: int  # diagnoses that went into it


def load(store: Store, service: str) -> ServiceSession | None:
    raw = store.get_setting(SETTING_PREFIX + service)
    if raw is None:
        return None
    try:
        return ServiceSession(**json.loads(raw))
    except (ValueError, TypeError):
        return None  # not ours any more (an older shape): start cold


def to_resume(store: Store, service: str, *, runner: str, cfg: ClaudeConfig, now: float) -> str | None:
    """The session a diagnosis of `service` should resume now, or None to start cold."""
    session = load(store, service)
    if session is None or session.runner != runner or cfg.session_minutes <= 0:
        return None
    if now - session.started_at > cfg.session_minutes * 60 or session.messages >= cfg.session_messages:
        return None
    return session.session_id


def note(store: Store, service: str, stats: RunStats, *, resumed: str | None, now: float) -> None:
    """Record the session a successful diagnosis ran in: one more message of a resumed one, else new."""
    if not stats.session_id:
        return
    previous = load(store, service)
    if resumed is not None and previous is not None and previous.session_id == resumed:
        session = ServiceSession(stats.session_id, stats.runner, previous.started_at, previous.messages + 1)
    else:
        session = ServiceSession(stats.session_id, stats.runner, now, 1)
    store.set_setting(SETTING_PREFIX + service, json.dumps(asdict(session)), actor=ACTOR, at=now)


def reset(store: Store, service: str, *, actor: str, now: float) -> bool:
    """Forget the service's session (`/newsession`); False when there was none."""
    if store.get_setting(SETTING_PREFIX + service) is None:
        return False
    store.set_setting(SETTING_PREFIX + service, None, actor=actor, at=now)
    return True
