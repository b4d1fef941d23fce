"""Background tasks beside the caller: a failure is logged, never lost silently; all can be awaited or cancelled."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Collection, Coroutine
from typing import Any

CANCEL_GRACE_S = 20.0  # how long a shutdown waits for cancelled tasks before it goes on without them


class BackgroundTasks:
    def __init__(self, log: logging.Logger, what: str) -> None:
        self._log = log
        self._what = what
        self._tasks: set[asyncio.Task[object]] = set()

    def spawn(self, coro: Coroutine[Any, Any, object], name: str) -> None:
        async def guarded() -> object:
            try:
                return await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                self._log.exception("%s %s failed", self._what, name)
                return None

        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(guarded(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def __bool__(self) -> bool:
        return bool(self._tasks)

    async def wait_idle(self) -> None:
        """Until none runs, including tasks spawned by the ones being awaited."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def cancel_all(self, grace_s: float = CANCEL_GRACE_S) -> None:
        await cancel_and_wait(self._tasks, self._log, self._what, grace_s)


async def cancel_and_wait(
    tasks: Collection[asyncio.Task[Any]], log: logging.Logger, what: str, grace_s: float = CANCEL_GRACE_S
) -> None:
    """Cancel the tasks and wait for them, at most `grace_s`: a shutdown never hangs on a task that does
    not end. One still running after that is named in the log with where it waits, and left behind."""
    pending = [task for task in tasks if not task.done()]
    for task in pending:
        task.cancel()
    if not pending:
        return
    _, stuck = await asyncio.wait(pending, timeout=grace_s)
    for task in stuck:
        where = io.StringIO()
        task.print_stack(limit=8, file=where)
        log.warning(
            "%s %s did not end within %g s of being cancelled; left behind:\n%s",
            what,
            task.get_name(),
            grace_s,
            where.getvalue(),
        )
