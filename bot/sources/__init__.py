"""Log sources: each reads new lines since a cursor the store keeps.

`build_sources` gives a service every source it has: its configured files, the files its manager writes
(PM2 out/err logs through `Pm2LogSource`, supervisord stdout/stderr logfiles), the journal of a systemd
unit, a container's `docker logs`. `source_health` turns the pipeline's per-source errors into rows for `doctor` / `/status`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.config import ServiceConfig
from bot.errors import HealbotError
from bot.interfaces import LogSource, ServiceManager
from bot.sources.docker import DockerLogsSource
from bot.sources.file import FileSource
from bot.sources.journald import JournaldSource
from bot.sources.pm2 import Pm2LogSource

log = logging.getLogger("healbot.sources")


def build_sources(cfg: ServiceConfig, manager: ServiceManager) -> list[LogSource]:
    """The sources of one service; a manager that cannot be asked now only costs its files."""
    sources: list[LogSource] = []
    options = cfg.manager_options
    if cfg.manager_type == "systemd":
        unit = str(options.get("unit") or f"{cfg.name}.service")
        sources.append(JournaldSource(cfg.name, unit, user=bool(options.get("user", False))))
    if cfg.manager_type == "docker":
        container = str(options.get("container") or cfg.name)
        sources.append(DockerLogsSource(cfg.name, container, binary=str(options.get("binary") or "docker")))
    paths = list(cfg.logs)
    if cfg.manager_type not in ("docker", "systemd"):  # docker's json file is root's; systemd has none
        try:
            extra = [Path(p) for p in manager.log_paths()]
        except HealbotError as exc:
            log.warning("%s: cannot ask the manager for its log files: %s", cfg.name, exc)
            extra = []
        paths.extend(p for p in extra if p not in paths)
    configured = set(cfg.logs)
    for path in paths:
        if cfg.manager_type == "pm2" and path not in configured:
            sources.append(Pm2LogSource(cfg.name, path))  # unwraps `--log-type json` entries
        else:
            sources.append(FileSource(cfg.name, path))
    return sources


@dataclass(frozen=True, slots=True)
class SourceHealth:
    source_id: str
    service: str
    ok: bool
    problem: str | None  # the last read's error in plain words; retried on every poll

    def describe(self) -> str:
        return (
            f"{self.source_id}: ok"
            if self.ok
            else f"{self.source_id}: failing ({self.problem}); retried each poll"
        )


def source_health(
    service: str, sources: Sequence[LogSource], errors: Mapping[str, str]
) -> list[SourceHealth]:
    """One row per source of a service, from `ServiceRuntime.source_errors`."""
    return [
        SourceHealth(s.source_id, service, s.source_id not in errors, errors.get(s.source_id))
        for s in sources
    ]


def probe_sources(service: str, sources: Sequence[LogSource]) -> list[SourceHealth]:
    """For `healbot doctor`: read each source once from the end (no lines are consumed)."""
    rows: list[SourceHealth] = []
    for source in sources:
        try:
            source.read(None)
        except HealbotError as exc:
            rows.append(SourceHealth(source.source_id, service, False, str(exc)))
        else:
            rows.append(SourceHealth(source.source_id, service, True, None))
    return rows
