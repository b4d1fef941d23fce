"""What one `healbot mcp` server may look at: one incident of one service. Written by the runner as a
JSON file, read by the server (`healbot mcp --scope FILE`). Samples are already redacted."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from bot.errors import HealbotError

if TYPE_CHECKING:
    from bot.config import ServiceConfig
    from bot.models import Incident

DEFAULT_MAX_CALLS = 40
DEFAULT_MAX_BYTES = 400_000
DEFAULT_ANSWER_BYTES = 16_000


class ScopeError(HealbotError):
    """The scope file is missing or malformed."""


@dataclass(frozen=True, slots=True)
class IncidentFacts:
    id: int
    fingerprint: str
    title: str
    count: int
    first_seen: float
    last_seen: float
    samples: tuple[str, ...] = ()
    exception_type: str | None = None


@dataclass(frozen=True, slots=True)
class ToolScope:
    service: str
    repo: str
    incident: IncidentFacts
    log_paths: tuple[str, ...] = ()
    journal_unit: str | None = None  # systemd services: `journalctl -u UNIT`
    docker_container: str | None = None
    config_path: str | None = None  # for health: the service's manager and probes
    db_path: str | None = None  # for history, opened read-only
    max_calls: int = DEFAULT_MAX_CALLS
    max_bytes: int = DEFAULT_MAX_BYTES
    answer_bytes: int = DEFAULT_ANSWER_BYTES
    calls_log: str | None = None  # JSONL: one line per tool call (name, args, bytes)
    secret_salt: str = ""  # with secret_digests: healbot's secret values, never in the clear
    secret_digests: tuple[tuple[int, str, str], ...] = ()

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> ToolScope:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ScopeError(f"cannot read the scope file {path}: {exc}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("incident"), dict):
            raise ScopeError(f"{path} is not a healbot tool scope (no incident object)")
        try:
            incident = IncidentFacts(
                **{**raw["incident"], "samples": tuple(raw["incident"].get("samples", ()))}
            )
            known = {f.name for f in fields(cls)} - {"incident"}
            values = {k: v for k, v in raw.items() if k in known}
            values["log_paths"] = tuple(values.get("log_paths", ()))
            values["secret_digests"] = tuple(tuple(d) for d in values.get("secret_digests", ()))
            return cls(incident=incident, **values)
        except TypeError as exc:
            raise ScopeError(f"{path} is not a healbot tool scope: {exc}") from None


def scope_for(
    cfg: ServiceConfig,
    incident: Incident,
    *,
    manager_logs: Sequence[str] = (),
    config_path: Path | None = None,
    db_path: Path | None = None,
) -> ToolScope:
    """The scope of a diagnosis of `incident`: its service's repo, logs, journal unit or container."""
    options = cfg.manager_options
    unit = str(options.get("unit") or f"{cfg.name}.service") if cfg.manager_type == "systemd" else None
    container = str(options.get("container") or cfg.name) if cfg.manager_type == "docker" else None
    paths = [str(p) for p in cfg.logs]
    paths += [p for p in manager_logs if p not in paths]
    return ToolScope(
        service=cfg.name,
        repo=str(cfg.repo),
        incident=IncidentFacts(
            id=incident.id,
            fingerprint=incident.fingerprint,
            title=incident.title,
            count=incident.count,
            first_seen=incident.first_seen,
            last_seen=incident.last_seen,
            samples=incident.samples,
            exception_type=incident.exception_type,
        ),
        log_paths=tuple(paths),
        journal_unit=unit,
        docker_container=container,
        config_path=str(config_path) if config_path else None,
        db_path=str(db_path) if db_path else None,
    )
