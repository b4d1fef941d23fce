"""Finds healers and service managers through entry points, so `bot` never imports a concrete healer."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import cast

from bot.errors import ConfigError, HealbotError
from bot.interfaces import Healer, ServiceManager, ServiceManagerFactory
from bot.models import FixKind

HEALERS_GROUP = "healbot.healers"
MANAGERS_GROUP = "healbot.service_managers"


def _load(group: str, name: str) -> object:
    matches = [ep for ep in entry_points(group=group) if ep.name == name]
    if not matches:
        known = ", ".join(sorted(ep.name for ep in entry_points(group=group))) or "none"
        raise HealbotError(
            f"no plugin {name!r} in entry point group {group} (installed: {known}); reinstall healbot"
        )
    return matches[0].load()


def healer(kind: FixKind) -> Healer:
    cls = _load(HEALERS_GROUP, kind.value)
    return cast(Healer, cast(type, cls)())


def all_healers() -> dict[FixKind, Healer]:
    return {kind: healer(kind) for kind in FixKind}


def service_manager(
    manager_type: str, service: str, options: Mapping[str, object], config_path: str
) -> ServiceManager:
    try:
        factory = cast(ServiceManagerFactory, _load(MANAGERS_GROUP, manager_type))
    except HealbotError as exc:
        raise ConfigError(str(exc), path=config_path, key=f"services.{service}.manager.type") from None
    return factory.from_options(service, options, config_path)
