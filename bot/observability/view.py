"""The running daemon as the metrics collector reads it (from the metrics server's thread)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.heartbeat import SourceScan
from bot.interfaces import Clock, LogSource
from bot.sources import expand_sources
from bot.store import Store

if TYPE_CHECKING:
    from bot.daemon import Daemon


@dataclass(frozen=True, slots=True)
class SourceView:
    """What the collector needs to know of one log source now."""

    service: str
    source: LogSource
    read_cursor: str | None  # where the running pipeline has read to (None: not read yet)


class DaemonView:
    """The running daemon as the metrics collector reads it, from the server's thread: every attribute it
    touches is replaced whole (never mutated in place) by the loop, so a scrape sees one or the other."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon

    @property
    def store(self) -> Store:
        return self._daemon.store

    @property
    def clock(self) -> Clock:
        return self._daemon.clock

    def source_views(self) -> Sequence[SourceView]:
        views = []
        for name, runtime in dict(self._daemon.pipeline.services).items():
            for source in expand_sources(list(runtime.sources)):
                assembler = runtime.assemblers.get(source.source_id)
                cursor = None if assembler is None else assembler.read_cursor
                views.append(SourceView(name, source, cursor))
        return views

    def records_read(self) -> Mapping[str, int]:
        return dict(self._daemon.pipeline.records_read())

    def scans(self) -> Sequence[SourceScan]:
        return self._daemon.heartbeat.snapshot()
