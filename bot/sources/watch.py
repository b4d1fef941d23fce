"""Wake the poll as soon as a watched log file changes: inotify (Linux, through ctypes: no dependency) on
the files' directories, read on the daemon's own event loop (`loop.add_reader`: no thread, no timer).

Polling stays the source of truth and the fallback: a missed or unavailable watch only costs latency.
The directories are watched rather than the files, so a file created or rotated later is seen too; only
events naming a watched file (or a rotated sibling, `app.log.1`) wake the poll. A directory that does not
exist yet is not watched (its files are polled only); `LogWatcher.missing` names it, so the owner can
`rewatch` once it appears, as it does when the set of files changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import struct
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

log = logging.getLogger("healbot.watch")

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_Q_OVERFLOW = 0x00004000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
WATCH_MASK = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then `len` bytes of NUL-padded name
READ_BYTES = 64 * 1024


class Inotify:
    """One inotify instance watching directories; `changed()` drains events and says if any matter."""

    def __init__(self, files: Iterable[Path]) -> None:
        names: dict[Path, set[bytes]] = {}
        for path in files:
            absolute = Path(os.path.abspath(path))
            names.setdefault(absolute.parent, set()).add(os.fsencode(absolute.name))
        self._names = names
        self._libc = _libc()
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_init1: {os.strerror(ctypes.get_errno())}")
        self.fd: int = fd
        self._dirs: dict[int, set[bytes]] = {}
        self.unwatched: list[str] = []  # directories that could not be watched, with the reason
        self.missing: list[Path] = []  # those of them that did not exist
        for directory, wanted in names.items():
            wd = self._libc.inotify_add_watch(fd, os.fsencode(directory), WATCH_MASK)
            if wd < 0:
                error = ctypes.get_errno()
                self.unwatched.append(f"{directory}: {os.strerror(error)}")
                if error == errno.ENOENT:
                    self.missing.append(directory)
            else:
                self._dirs[wd] = wanted

    @property
    def watching(self) -> int:
        return len(self._dirs)

    def changed(self) -> bool:
        """Read every pending event; True when one names a watched file or the queue overflowed."""
        relevant = False
        while True:
            try:
                data = os.read(self.fd, READ_BYTES)
            except BlockingIOError:
                return relevant
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            if not data:
                return relevant
            offset = 0
            while offset + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                name = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
                offset += _EVENT.size + length
                wanted = self._dirs.get(wd, ())
                if mask & IN_Q_OVERFLOW or any(name == w or name.startswith(w + b".") for w in wanted):
                    relevant = True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


MIN_GAP_S = 0.05  # between two woken polls: a file written non-stop cannot keep the loop busy
SETTLE_S = 0.1  # then one more poll: the pipeline closes a record when a poll finds no new lines


class PollWaker:
    """Calls `poll` soon, one run at a time. Wakes during a run cause one more run (at least `min_gap_s`
    after the previous one began); once no wake came, one last run `settle_s` later lets the pipeline
    flush the record that the last line began (it cannot know the record is complete before)."""

    def __init__(
        self,
        poll: Callable[[], Awaitable[object]],
        *,
        min_gap_s: float = MIN_GAP_S,
        settle_s: float = SETTLE_S,
    ) -> None:
        self._poll = poll
        self.min_gap_s = min_gap_s
        self.settle_s = settle_s
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self.runs = 0

    def wake(self) -> None:
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="healbot-wake-poll")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        dirty = True  # a wake came that no settle poll has followed yet
        while True:
            if self._again:
                dirty = True
            self._again = False
            self.runs += 1
            began = loop.time()
            try:
                await self._poll()
            except Exception:
                log.exception("poll after a file change failed; the interval poll carries on")
            if self._again:
                await asyncio.sleep(max(0.0, began + self.min_gap_s - loop.time()))
            elif dirty:
                dirty = False
                await asyncio.sleep(self.settle_s)
            else:
                return

    async def cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None


class LogWatcher:
    """inotify on the event loop → `PollWaker`. `start` returns None when watching, else why not; `rewatch`
    swaps the watched files in place, keeping the waker (its poll may be the very caller)."""

    def __init__(self, files: Iterable[Path], poll: Callable[[], Awaitable[object]]) -> None:
        self.files = tuple(files)
        self.waker = PollWaker(poll)
        self._inotify: Inotify | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.complete = False  # every file's directory is watched
        self.missing: tuple[Path, ...] = ()  # directories of the files that did not exist at the last watch

    @property
    def watching(self) -> bool:
        return self._inotify is not None

    def start(self, loop: asyncio.AbstractEventLoop) -> str | None:
        self._loop = loop
        return self._attach(loop)

    def rewatch(self, files: Iterable[Path]) -> str | None:
        """Watch `files` from now on, in place of the ones before. Nothing is cancelled: a poll the waker
        is running carries on. When watching, the poll is woken once, for a line written between the
        caller's last read and the new watch."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("rewatch before start")
        self._detach()
        self.files = tuple(files)
        problem = self._attach(loop)
        if problem is None:
            self.waker.wake()
        return problem

    def _attach(self, loop: asyncio.AbstractEventLoop) -> str | None:
        self.complete = False
        self.missing = ()
        if not self.files:
            return "no log files to watch"
        try:
            inotify = Inotify(self.files)
        except OSError as exc:
            return f"inotify unavailable ({exc}); polling only"
        self.missing = tuple(inotify.missing)
        if inotify.watching == 0:
            inotify.close()
            return f"no directory could be watched ({'; '.join(inotify.unwatched)}); polling only"
        for problem in inotify.unwatched:
            log.warning("not watching %s; polled only", problem)
        self.complete = not inotify.unwatched
        loop.add_reader(inotify.fd, self._on_readable)
        self._inotify = inotify
        return None

    def _on_readable(self) -> None:
        if self._inotify is None:
            return
        try:
            relevant = self._inotify.changed()
        except OSError as exc:
            log.warning("inotify read failed (%s); polling only from now on", exc)
            self._detach()
            return
        if relevant:
            self.waker.wake()

    def _detach(self) -> None:
        if self._inotify is not None and self._loop is not None:
            self._loop.remove_reader(self._inotify.fd)
            self._inotify.close()
        self._inotify = None

    async def stop(self) -> None:
        self._detach()
        self._loop = None
        await self.waker.cancel()


def file_paths(sources: Iterable[object]) -> list[Path]:
    """The files behind the file-like sources (file, PM2); command sources have none."""
    paths: list[Path] = []
    for source in sources:
        path = getattr(source, "path", None)
        if isinstance(path, Path) and path not in paths:
            paths.append(path)
    return paths


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)  # the C library the interpreter already has loaded
    if not hasattr(libc, "inotify_init1"):
        raise OSError(errno.ENOSYS, "this C library has no inotify")
    libc.inotify_init1.argtypes = [ctypes.c_int]
    libc.inotify_init1.restype = ctypes.c_int
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    libc.inotify_add_watch.restype = ctypes.c_int
    return libc
