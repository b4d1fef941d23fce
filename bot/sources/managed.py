"""The log files a service manager names (PM2 out/err logs, supervisord stdout/stderr logfiles), asked for
again until the manager answers, and now and then after that.

`build_sources` asks the manager once, at start-up or reload. When PM2's or supervisord's daemon is down at
that moment (or the app is not defined yet), `ManagerLogSources` is the source that keeps asking:

- while the manager cannot answer, it is a failing source whose problem is the manager's own words (doctor,
  /status and the heartbeat show it); it asks again 1, 2, 4 … s later, then at most once a minute;
- once it answers, each file it names that no other source of the service reads becomes a source of its
  own (`files()`), polled right after this one (`expand_sources`). It asks again once a minute, so a file
  the manager names later (an app re-created with other log paths) is picked up, and one it no longer
  names is dropped. The files found at start-up stay plain sources of the service, as before.

A file found late is read from where healbot first saw it, never its old history (an old log could open
stale incidents): from its end when it already existed, as any file source starts; from its start when it
did not exist yet, since everything in it was written after healbot learned its name.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from bot.clock import SystemClock
from bot.errors import HealbotError, SourceError
from bot.interfaces import Clock, LogSource, ServiceManager
from bot.models import SourceBatch
from bot.sources.file import POLL_MAX_BYTES, FileSource
from bot.sources.pm2 import Pm2LogSource

log = logging.getLogger("healbot.sources")

RETRY_FIRST_S = 1.0  # after the first failed ask; doubles with each failure in a row
RETRY_MAX_S = 60.0
REFRESH_S = 60.0  # between two asks while the manager answers
RETRY_NOTE = "asked again after 1, 2, 4 … s, then once a minute"

ManagedFile = FileSource | Pm2LogSource
FileOpener = Callable[[str, Path], ManagedFile]


def ask_manager(manager: ServiceManager) -> tuple[tuple[Path, ...], str | None]:
    """(the files the manager names, None), or ((), its problem in plain words) when it cannot answer."""
    try:
        return tuple(dict.fromkeys(Path(p) for p in manager.log_paths())), None
    except HealbotError as exc:
        return (), str(exc)


class LateFileSource:
    """A file the manager named after start-up, read from where healbot first saw it (see the module)."""

    def __init__(self, inner: ManagedFile, *, existed: bool) -> None:
        self.inner = inner
        self.existed = existed
        self.service = inner.service
        self.path = inner.path
        self.source_id = inner.source_id

    def nothing_new(self, cursor: str | None) -> bool:
        return self.inner.nothing_new(cursor)

    def read(self, cursor: str | None, max_bytes: int = POLL_MAX_BYTES) -> SourceBatch:
        if cursor is None and not self.existed:
            cursor = self.inner.start_cursor()  # raises SourceError while the file is still missing
        return self.inner.read(cursor, max_bytes)


class ManagerLogSources:
    """A LogSource whose read asks the manager for its log files when due; `files()` are the ones it found.

    It yields no lines itself. Its cursor is the list of files the manager named at the last answer (stored
    only when that changes). Reads run in a worker thread; `files()` is a tuple swapped whole, so the loop
    may look at it meanwhile.
    """

    def __init__(
        self,
        service: str,
        manager: ServiceManager,
        *,
        manager_type: str,
        covered: Iterable[Path],
        open_file: FileOpener,
        clock: Clock | None = None,
        named: Sequence[Path] = (),
        problem: str | None = None,
    ) -> None:
        """`covered`: files other sources of the service read already. `named` / `problem`: the answer
        to the ask made at start-up (`ask_manager`), so that this source starts from it."""
        self.service = service
        self.manager = manager
        self.manager_type = manager_type
        self.source_id = f"{manager_type}-log-files:{service}"
        self.retry_note = RETRY_NOTE
        self._covered = frozenset(covered)
        self._open_file = open_file
        self._clock = clock or SystemClock()
        self._named: tuple[Path, ...] = ()
        self._files: tuple[LateFileSource, ...] = ()
        self._failures = 0
        self._next_ask = 0.0
        self.problem: str | None = None
        self._take_answer(tuple(named), problem)

    def files(self) -> tuple[LateFileSource, ...]:
        return self._files

    def nothing_new(self, cursor: str | None) -> bool:
        """True when no ask is due and the last one succeeded: the idle poll costs no thread hop."""
        return self.problem is None and not self._ask_due()

    def read(self, cursor: str | None, max_bytes: int = POLL_MAX_BYTES) -> SourceBatch:
        if self._ask_due():
            self.ask()
        if self.problem is not None:
            raise SourceError(self.problem)
        return SourceBatch(lines=(), cursor=json.dumps([str(p) for p in self._named]))

    def ask(self) -> None:
        """Ask the manager now (blocking: PM2 runs `pm2 jlist`, supervisord answers over XML-RPC)."""
        named, problem = ask_manager(self.manager)
        self._take_answer(named, problem)

    # --- internals ---------------------------------------------------------------------------------

    def _ask_due(self) -> bool:
        return self._clock.monotonic() >= self._next_ask

    def _take_answer(self, named: tuple[Path, ...], problem: str | None) -> None:
        now = self._clock.monotonic()
        if problem is not None:
            self._failures += 1
            self._next_ask = now + min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (self._failures - 1))
            self.problem = f"{self.manager_type} cannot name the log files of {self.service} yet: {problem}"
            return  # the files found before stay read: they are still there
        if self.problem is not None:
            log.warning("%s: %s answers again", self.service, self.manager_type)
        self._failures = 0
        self._next_ask = now + REFRESH_S
        self.problem = None
        self._named = named
        self._adopt([p for p in named if p not in self._covered])

    def _adopt(self, paths: list[Path]) -> None:
        current = {source.path: source for source in self._files}
        files = tuple(
            current.get(path) or LateFileSource(self._open_file(self.service, path), existed=path.exists())
            for path in paths
        )
        added = [str(p) for p in paths if p not in current]
        dropped = [str(p) for p in current if p not in paths]
        if added:
            log.warning("%s: %s now names %s", self.service, self.manager_type, ", ".join(added))
        if dropped:
            log.warning("%s: %s no longer names %s", self.service, self.manager_type, ", ".join(dropped))
        self._files = files


def expand_sources(sources: Iterable[LogSource]) -> Iterator[LogSource]:
    """Every source, each `ManagerLogSources` followed by the files it has found. Lazy: a caller that reads
    each source before taking the next one also reads the files that read has just found."""
    for source in sources:
        yield source
        if isinstance(source, ManagerLogSources):
            yield from source.files()
