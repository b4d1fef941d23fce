"""Log sources: each reads new lines since a cursor the store keeps.

`build_sources` gives a service every source it has: its configured files, the files its manager writes
(PM2 out/err logs through `Pm2LogSource`, supervisord stdout/stderr logfiles), the journal of a systemd
unit, a container's `docker logs`. A manager that writes files also gets a `ManagerLogSources`, which keeps
asking it for them (it may be down at start-up, or name other files later); iterate a service's sources
with `expand_sources` to include the files it found. `source_health` turns the pipeline's per-source
errors into rows for `doctor` / `/status`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.config import ServiceConfig
from bot.errors import HealbotError
from bot.interfaces import Clock, LogSource, ServiceManager
from bot.sources.docker import DockerLogsSource
from bot.sources.file import FileSource
from bot.sources.journald import JournaldSource
from bot.sources.managed import ManagerLogSources, ask_manager, expand_sources
from bot.sources.pm2 import Pm2LogSource

__all__ = ["SourceHealth", "build_sources", "expand_sources", "probe_sources", "source_health"]


def build_sources(
    cfg: ServiceConfig, manager: ServiceManager, *, clock: Clock | None = None
) -> list[LogSource]:
    """The sources of one service. The manager is asked for its files now; when it cannot answer, its
    `ManagerLogSources` is a failing source that asks again until it does (see bot/sources/managed.py)."""
    sources: list[LogSource] = []
    options = cfg.manager_options
    if cfg.manager_type == "systemd":
        unit = str(options.get("unit") or f"{cfg.name}.service")
        sources.append(JournaldSource(cfg.name, unit, user=bool(options.get("user", False))))
    if cfg.manager_type == "docker":
        container = str(options.get("container") or cfg.name)
        sources.append(DockerLogsSource(cfg.name, container, binary=str(options.get("binary") or "docker")))
    paths = list(cfg.logs)
    managed: ManagerLogSources | None = None
    if cfg.manager_type not in MANAGERS_WITHOUT_FILES:
        named, problem = ask_manager(manager)
        paths.extend(p for p in named if p not in paths)
        open_file = _pm2_file if cfg.manager_type == "pm2" else _plain_file
        managed = ManagerLogSources(
            cfg.name,
            manager,
            manager_type=cfg.manager_type,
            covered=paths,
            open_file=open_file,
            clock=clock,
            named=named,
            problem=problem,
        )
    configured = set(cfg.logs)
    for path in paths:
        if cfg.manager_type == "pm2" and path not in configured:
            sources.append(_pm2_file(cfg.name, path))  # unwraps `--log-type json` entries
        else:
            sources.append(_plain_file(cfg.name, path))
    if managed is not None:
        sources.append(managed)
    return sources


# docker's json file is root's; systemd has none; a command manager never names any
MANAGERS_WITHOUT_FILES = frozenset({"docker", "systemd", "command"})


def _pm2_file(service: str, path: Path) -> Pm2LogSource:
    return Pm2LogSource(service, path)


def _plain_file(service: str, path: Path) -> FileSource:
    return FileSource(service, path)


@dataclass(frozen=True, slots=True)
class SourceHealth:
    source_id: str
    service: str
    ok: bool
    problem: str | None  # the last read's error in plain words
    retry: str = "retried each poll"

    def describe(self) -> str:
        return (
            f"{self.source_id}: ok"
            if self.ok
            else f"{self.source_id}: failing ({self.problem}); {self.retry}"
        )


def source_health(
    service: str, sources: Sequence[LogSource], errors: Mapping[str, str]
) -> list[SourceHealth]:
    """One row per source of a service (the files a `ManagerLogSources` found too), from
    `ServiceRuntime.source_errors`."""
    return [
        SourceHealth(s.source_id, service, s.source_id not in errors, errors.get(s.source_id), _retry(s))
        for s in expand_sources(sources)
    ]


def probe_sources(service: str, sources: Sequence[LogSource]) -> list[SourceHealth]:
    """For `healbot doctor`: read each source once from the end (no lines are consumed)."""
    rows: list[SourceHealth] = []
    for source in expand_sources(sources):
        try:
            source.read(None)
        except HealbotError as exc:
            rows.append(SourceHealth(source.source_id, service, False, str(exc), _retry(source)))
        else:
            rows.append(SourceHealth(source.source_id, service, True, None, _retry(source)))
    return rows


def _retry(source: LogSource) -> str:
    return source.retry_note if isinstance(source, ManagerLogSources) else "retried each poll"
